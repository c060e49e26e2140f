"""Live prices on stdout: one row per symbol, updated in place.

Per symbol the board shows the last trade price, best bid and ask, the spread in basis points and
the close of the current 1-minute kline. Sources, freshest first: last from :class:`Trade` (a
:class:`Ticker`'s ``last_price`` until the first trade), bid/ask/spread from :class:`Depth`
(the ticker's until the first depth), kline close from 1-minute :class:`Kline` events.

When the feed is down (:class:`~genesis.models.events.FeedDown`: no market-data connection is
live) every row is marked stale with the age of its prices (``STALE 12s``), until
:class:`~genesis.models.events.FeedUp`.

Two ways to show it:

- **terminal** (stdout is a TTY): the table is redrawn in place with ANSI cursor movement, at
  most :data:`MAX_REDRAWS_PER_S` times a second and only when something changed. Log lines are
  printed above the table (see :func:`genesis.app.logging.redirect_console`) so they do not
  tear it.
- **lines** (a pipe or file): once every :data:`LINE_INTERVAL_S` seconds one compact line per
  symbol that has data.
"""

from __future__ import annotations

import contextlib
import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Final, NoReturn, TextIO

import attrs
import trio

from genesis.app.logging import redirect_console
from genesis.models.events import FeedDown, FeedUp
from genesis.models.market import Depth, Kline, Ticker, Trade

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from genesis.bus import EventBus

__all__ = [
    "DISPLAY_BUFFER",
    "LINE_INTERVAL_S",
    "MAX_REDRAWS_PER_S",
    "LiveDisplay",
    "PriceBoard",
    "PriceRow",
    "format_line",
    "format_table",
    "run_dashboard",
]

logger = logging.getLogger(__name__)

MAX_REDRAWS_PER_S: Final = 4
LINE_INTERVAL_S: Final = 1.0
DISPLAY_BUFFER: Final = 1024
KLINE_INTERVAL: Final = "1m"

_CSI: Final = "\x1b["
_CLEAR_LINE: Final = _CSI + "2K"
_CLEAR_BELOW: Final = _CSI + "J"
_BPS_QUANTUM: Final = Decimal("0.01")
_HEADER: Final = ("SYMBOL", "LAST", "BID", "ASK", "SPREAD bps", "KLINE 1m", "")


@attrs.frozen(kw_only=True)
class PriceRow:
    """What the board knows about one symbol; ``None`` where nothing has arrived yet."""

    symbol: str
    last: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    spread_bps: Decimal | None = None
    kline_close: Decimal | None = None
    last_from_trade: bool = False
    book_from_depth: bool = False
    stale_s: float | None = None
    """The feed is down: how old these prices are (seconds); ``None`` while it is live."""

    @property
    def has_data(self) -> bool:
        return any(v is not None for v in (self.last, self.bid, self.ask, self.kline_close))


@attrs.define
class PriceBoard:
    """The latest prices per symbol, folded from market events. Pure and synchronous."""

    symbols: tuple[str, ...]
    _rows: dict[str, PriceRow] = attrs.field(init=False)
    down_since: float | None = None
    """Trio time the feed went down (``FeedDown.at`` minus the age of the last event)."""

    def __attrs_post_init__(self) -> None:
        self._rows = {s: PriceRow(symbol=s) for s in self.symbols}

    def apply(self, event: object) -> bool:
        """Fold ``event`` into the board. Returns whether a shown value may have changed."""
        if isinstance(event, FeedDown):
            self.down_since = event.at - (event.last_event_age_s or 0.0)
            return True
        if isinstance(event, FeedUp):
            self.down_since = None
            return True
        if not isinstance(event, Trade | Ticker | Depth | Kline):
            return False
        row = self._rows.get(event.symbol)
        if row is None:
            return False
        if isinstance(event, Trade):
            new = attrs.evolve(row, last=event.price, last_from_trade=True)
        elif isinstance(event, Depth):
            bid, ask = event.best_bid, event.best_ask
            new = attrs.evolve(
                row,
                bid=bid.price if bid else None,
                ask=ask.price if ask else None,
                spread_bps=event.spread_bps,
                book_from_depth=True,
            )
        elif isinstance(event, Ticker):
            new = row
            if not row.last_from_trade:
                new = attrs.evolve(new, last=event.last_price)
            if not row.book_from_depth:
                new = attrs.evolve(
                    new, bid=event.best_bid, ask=event.best_ask, spread_bps=event.spread_bps
                )
        else:
            if event.interval != KLINE_INTERVAL:
                return False
            new = attrs.evolve(row, kline_close=event.close_price)
        self._rows[event.symbol] = new
        return new != row

    def rows(self, now: float | None = None) -> tuple[PriceRow, ...]:
        """The rows; while the feed is down each carries its age at ``now`` (Trio time)."""
        if self.down_since is None:
            return tuple(self._rows[s] for s in self.symbols)
        age = max(0.0, (trio.current_time() if now is None else now) - self.down_since)
        return tuple(attrs.evolve(self._rows[s], stale_s=age) for s in self.symbols)


def _price(value: Decimal | None) -> str:
    if value is None:
        return "-"
    text = format(value.normalize(), "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def _bps(value: Decimal | None) -> str:
    return "-" if value is None else format(value.quantize(_BPS_QUANTUM), "f")


def _stale(row: PriceRow) -> str:
    return "" if row.stale_s is None else f"STALE {row.stale_s:.0f}s"


def _cells(row: PriceRow) -> tuple[str, ...]:
    return (
        row.symbol,
        _price(row.last),
        _price(row.bid),
        _price(row.ask),
        _bps(row.spread_bps),
        _price(row.kline_close),
        _stale(row),
    )


def format_table(rows: Sequence[PriceRow]) -> list[str]:
    """The board as aligned text lines: a header, then one line per symbol."""
    table = [_HEADER, *(_cells(r) for r in rows)]
    if all(r.stale_s is None for r in rows):
        table = [line[:-1] for line in table]  # the STALE column only while the feed is down
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(line)
        )
        for line in table
    ]


def format_line(row: PriceRow) -> str:
    """One compact line for ``row`` (the non-terminal form)."""
    stale = "" if row.stale_s is None else f" stale_s={row.stale_s:.0f}"
    return (
        f"{row.symbol} last={_price(row.last)} bid={_price(row.bid)} ask={_price(row.ask)} "
        f"spread_bps={_bps(row.spread_bps)} kline_1m={_price(row.kline_close)}{stale}"
    )


@attrs.define(eq=False)
class LiveDisplay:
    """Draws a :class:`PriceBoard` on ``out``, in place on a terminal or as lines elsewhere.

    It is also a :class:`~genesis.app.logging.LineSink`: on a terminal a log line is printed
    above the table, which is then redrawn below it.
    """

    board: PriceBoard
    out: TextIO
    tty: bool
    _drawn_lines: int = attrs.field(default=0, init=False)
    redraws: int = attrs.field(default=0, init=False)

    def redraw(self) -> None:
        """Terminal form: replace the table drawn last with the current one."""
        lines = format_table(self.board.rows())
        parts = []
        if self._drawn_lines:
            # Cursor to the start of the table's first line (CSI n F), then overwrite each line.
            parts.append(f"{_CSI}{self._drawn_lines}F")
        parts.extend(f"{_CLEAR_LINE}{line}\n" for line in lines)
        self.out.write("".join(parts))
        self.out.flush()
        self._drawn_lines = len(lines)
        self.redraws += 1

    def print_lines(self) -> None:
        """Line form: one compact line per symbol that has data."""
        lines = [format_line(r) for r in self.board.rows() if r.has_data]
        if lines:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()

    def write_line(self, line: str) -> None:
        """Print a log line; on a terminal above the table, which is redrawn under it."""
        if not self.tty or not self._drawn_lines:
            self.out.write(line + "\n")
            self.out.flush()
            return
        self.out.write(f"{_CSI}{self._drawn_lines}F{_CLEAR_BELOW}{line}\n")
        self._drawn_lines = 0
        self.redraw()


async def run_dashboard(
    bus: EventBus,
    symbols: Iterable[str],
    out: TextIO,
    *,
    tty: bool | None = None,
    capture_logs: bool = False,
    task_status: trio.TaskStatus[LiveDisplay] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Show live prices for ``symbols`` from ``bus`` on ``out`` until cancelled.

    Args:
        bus: where market events come from (subscribed with a bounded buffer; the bus's
            overflow policy for market data drops, so a slow terminal never stalls the feed).
        symbols: the symbols to show, in this order.
        out: the text stream to draw on (not closed here).
        tty: draw in place; ``None`` asks ``out.isatty()``.
        capture_logs: on a terminal, print console log lines above the table (set it when
            the log stream is the same terminal).
        task_status: receives the :class:`LiveDisplay` once subscribed.
    """
    in_place = out.isatty() if tty is None else tty
    display = LiveDisplay(board=PriceBoard(tuple(symbols)), out=out, tty=in_place)
    changed = trio.Event()

    async with bus.subscribe(
        Trade, Ticker, Depth, Kline, FeedDown, FeedUp, buffer_size=DISPLAY_BUFFER
    ) as sub:

        async def consume() -> None:
            nonlocal changed
            async for event in sub:
                if display.board.apply(event):
                    changed.set()

        async def paint_in_place() -> None:
            nonlocal changed
            min_gap_s = 1.0 / MAX_REDRAWS_PER_S
            display.redraw()
            while True:
                if display.board.down_since is None:
                    await changed.wait()
                else:  # the feed is down: redraw each second, so the ages count up
                    with trio.move_on_after(1.0):
                        await changed.wait()
                changed = trio.Event()
                display.redraw()
                await trio.sleep(min_gap_s)

        async def print_periodically() -> None:
            while True:
                await trio.sleep(LINE_INTERVAL_S)
                display.print_lines()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            if in_place:
                nursery.start_soon(paint_in_place)
            else:
                nursery.start_soon(print_periodically)
            logger.debug("dashboard.start mode=%s", "tty" if in_place else "lines")
            task_status.started(display)
            capture = in_place and capture_logs
            with redirect_console(display) if capture else contextlib.nullcontext():
                await trio.sleep_forever()
    raise AssertionError("the dashboard runs until cancelled")  # pragma: no cover
