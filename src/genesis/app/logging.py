"""The one place that configures logging handlers (STYLE.md §1.7).

Every module logs through ``logging.getLogger(__name__)`` with a stable event name first and
``key=value`` pairs after it (``"ws.reconnect role=%s attempt=%d"``). :func:`configure_logging`
attaches a single console handler to the root logger, in one of two forms:

- **text** (the default), for a person::

      2026-12-01T10:51:25.123Z WARNING genesis.exchange.ws_manager ws.connect_failed role=backup ...

  UTC time with milliseconds, the level, the logger, the message.
- **JSON lines** (``--log-json``), for a machine: exactly one JSON object per line, with stable
  keys: ``ts`` (the same UTC time), ``level``, ``logger``, ``event`` (the message's first word),
  ``message`` (the whole formatted message), every ``key=value`` pair of the message as its own
  string field (a pair never overrides the fixed keys), and ``exc`` (the traceback as one string)
  when there is one. :func:`json_line` builds the same kind of object for other writers (the
  price lines of the dashboard, the CLI's error messages), so with ``--log-json`` nothing Genesis
  writes is anything but one JSON object per line.

Two more things make the console handler special:

- **Masking.** Secrets handed to :func:`configure_logging` are masked as ``********`` in every
  line, a last line of defence (Genesis code never logs a secret in the first place). A secret
  is masked only as a whole token, where it is not part of a longer run of letters, digits, ``_``
  or ``-``: a one-letter secret ``s`` masks ``secret=s`` but leaves ``symbols`` alone.
- **Redirection.** A live display that redraws in place on a terminal is corrupted by log lines
  written to the same terminal. While a :class:`LineSink` is installed with
  :func:`redirect_console`, finished lines go to it instead of the stream, so the display can
  print them above itself.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from typing import TYPE_CHECKING, Final, Protocol, TextIO

import orjson

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from genesis.config import Secret

__all__ = [
    "LOG_FORMAT",
    "MASK",
    "ConsoleHandler",
    "JsonFormatter",
    "LineSink",
    "Masker",
    "TextFormatter",
    "configure_logging",
    "json_line",
    "json_logging",
    "redirect_console",
    "reset_logging",
    "utc_timestamp",
]

LOG_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s %(message)s"
MASK: Final = "********"
_TOKEN_CHARS: Final = r"A-Za-z0-9_\-"
_PAIR_RE: Final = re.compile(r"(?:^|\s)([a-z][a-z0-9_]*)=(\S*)")
_FIXED_KEYS: Final = frozenset({"ts", "level", "logger", "event", "message"})


def utc_timestamp(created: float) -> str:
    """``2026-12-01T10:51:25.123Z`` for an epoch time in seconds."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created * 1000) % 1000:03d}Z"


class Masker:
    """Replaces each secret, as a whole token, with :data:`MASK`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.values: tuple[str, ...] = tuple(values)
        self._pattern = (
            re.compile(
                f"(?<![{_TOKEN_CHARS}])(?:{'|'.join(re.escape(v) for v in values)})"
                f"(?![{_TOKEN_CHARS}])"
            )
            if values
            else None
        )

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)


class TextFormatter(logging.Formatter):
    """The readable form: UTC time with milliseconds, level, logger, message."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record.created)


def json_line(
    event: str,
    fields: Mapping[str, object] | None = None,
    *,
    level: str = "INFO",
    logger: str = "genesis",
    message: str | None = None,
    created: float | None = None,
) -> str:
    """One JSON object (without the newline) with the log line's fixed keys and ``fields``.

    Values that are not JSON types (``Decimal``, enums) are written as strings.
    """
    record: dict[str, object] = {
        "ts": utc_timestamp(time.time() if created is None else created),
        "level": level,
        "logger": logger,
        "event": event,
        "message": event if message is None else message,
    }
    record.update({k: v for k, v in (fields or {}).items() if k not in _FIXED_KEYS})
    return orjson.dumps(record, default=str).decode()


class JsonFormatter(logging.Formatter):
    """The machine form: one JSON object per record (see the module docstring)."""

    def __init__(self, mask: Masker | None = None) -> None:
        super().__init__()
        self._mask = mask or Masker()

    def format(self, record: logging.LogRecord) -> str:
        message = self._mask(record.getMessage())
        event, _, rest = message.partition(" ")
        fields: dict[str, object] = {k: v for k, v in _PAIR_RE.findall(rest) if k != "exc"}
        if record.exc_info:
            fields["exc"] = self._mask(self.formatException(record.exc_info))
        elif record.exc_text:
            fields["exc"] = self._mask(record.exc_text)
        return json_line(
            event,
            fields,
            level=record.levelname,
            logger=record.name,
            message=message,
            created=record.created,
        )


class LineSink(Protocol):
    """Something that takes finished log lines (without the trailing newline)."""

    def write_line(self, line: str) -> None: ...


class ConsoleHandler(logging.Handler):
    """Writes formatted records to a stream, or to a :class:`LineSink` while one is installed.

    Every line passes the :class:`Masker` last, whatever the formatter did.
    """

    def __init__(self, stream: TextIO, *, redact: Iterable[str] = (), json: bool = False) -> None:
        super().__init__()
        self.stream = stream
        self.sink: LineSink | None = None
        self.json = json
        self.mask = Masker(redact)
        self.setFormatter(JsonFormatter(self.mask) if json else TextFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.mask(self.format(record))
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
    json: bool = False,
) -> ConsoleHandler:
    """Install the console handler on the root logger, replacing one installed earlier.

    Args:
        level: the level for Genesis's loggers (libraries log at WARNING and above).
        stream: where lines go; ``sys.stderr`` when ``None`` (stdout belongs to the display).
        secrets: values masked as ``********`` wherever they appear as a whole token.
        json: write JSON lines instead of text.

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
        json=json,
    )
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


def json_logging() -> bool:
    """Whether the installed console handler writes JSON lines."""
    return _handler is not None and _handler.json


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
