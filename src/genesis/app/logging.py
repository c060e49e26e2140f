"""The one place that configures logging handlers (STYLE.md §1.7).

Every module logs through ``logging.getLogger(__name__)``; :func:`configure_logging` attaches a
single console handler to the ``genesis`` logger tree (and the root logger, for libraries).

Two things make the console handler special:

- **Redaction.** Secrets handed to :func:`configure_logging` are masked in every formatted line,
  a last line of defence: Genesis code never logs a secret in the first place.
- **Redirection.** A live price display that redraws in place on a terminal is corrupted by log
  lines written to the same terminal. While a :class:`LineSink` is installed with
  :func:`redirect_console`, finished log lines go to it instead of the stream, so the display
  can print them above itself and redraw.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Final, Protocol, TextIO

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from genesis.config import Secret

__all__ = [
    "LOG_FORMAT",
    "ConsoleHandler",
    "LineSink",
    "configure_logging",
    "redirect_console",
    "reset_logging",
]

LOG_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s %(message)s"
_MASK: Final = "********"


class LineSink(Protocol):
    """Something that takes finished log lines (without the trailing newline)."""

    def write_line(self, line: str) -> None: ...


class ConsoleHandler(logging.Handler):
    """Writes formatted records to a stream, or to a :class:`LineSink` while one is installed."""

    def __init__(self, stream: TextIO, *, redact: Iterable[str] = ()) -> None:
        super().__init__()
        self.stream = stream
        self.sink: LineSink | None = None
        self._redact = tuple(sorted({s for s in redact if s}, key=len, reverse=True))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            for secret in self._redact:
                line = line.replace(secret, _MASK)
            if self.sink is not None:
                self.sink.write_line(line)
            else:
                self.stream.write(line + "\n")
                self.stream.flush()
        except Exception:
            self.handleError(record)


_handler: ConsoleHandler | None = None
_previous_root_level: int | None = None


def configure_logging(
    level: int | str = logging.INFO,
    *,
    stream: TextIO | None = None,
    secrets: Iterable[Secret | None] = (),
) -> ConsoleHandler:
    """Install the console handler on the root logger, replacing one installed earlier.

    Args:
        level: the level for Genesis's loggers (libraries log at WARNING and above).
        stream: where lines go; ``sys.stderr`` when ``None`` (stdout belongs to the display).
        secrets: values masked as ``********`` wherever they would appear in a line.

    Returns:
        The installed handler.
    """
    global _handler, _previous_root_level
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    else:
        _previous_root_level = root.level
    handler = ConsoleHandler(
        sys.stderr if stream is None else stream,
        redact=(s.reveal() for s in secrets if s is not None),
    )
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("genesis").setLevel(level)
    _handler = handler
    return handler


def reset_logging() -> None:
    """Remove the handler :func:`configure_logging` installed (tests, embedding)."""
    global _handler, _previous_root_level
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler = None
    if _previous_root_level is not None:
        root.setLevel(_previous_root_level)
        _previous_root_level = None
    logging.getLogger("genesis").setLevel(logging.NOTSET)


@contextlib.contextmanager
def redirect_console(sink: LineSink) -> Iterator[None]:
    """Send console log lines to ``sink`` inside the block (no-op before configuration)."""
    handler = _handler
    if handler is None:
        yield
        return
    previous = handler.sink
    handler.sink = sink
    try:
        yield
    finally:
        handler.sink = previous
