"""``genesis replay PATH``: feed a ``--record`` file back onto a bus.

Each line of a recording is one ``{"type": "<EventClass>", ...}`` object
(:func:`genesis.models.codec.event_to_record`); :func:`replay_file` turns it back into the typed,
validated event with :func:`genesis.models.codec.record_to_event` and publishes it, in file order,
on an :class:`~genesis.bus.EventBus`, so a strategy subscribed there sees a captured session
exactly as it saw the live one (and ``genesis replay`` shows it on the dashboard).

Two speeds (:class:`ReplaySpeed`):

- ``recorded``: events are spaced as they were recorded, by their own wall-clock time
  (:func:`event_time_ms`: the exchange's event time, a depth snapshot's receive time, an
  alert's time). Events without one go out at once. A pause longer than ``max_pause_s`` (a
  recording left running overnight on a quiet market) is shortened to ``max_pause_s`` and
  counted.
- ``full``: as fast as the bus takes them.

A bad line (not JSON, an unknown type, fields that do not build a valid event) is counted and
skipped, never fatal; the first :data:`LOGGED_BAD_LINES` are logged at WARNING with their line
number and the reason (never the line itself).
"""

from __future__ import annotations

import enum
import logging
import os
from collections import Counter
from typing import TYPE_CHECKING, Final

import attrs
import orjson
import trio

from genesis.errors import RecordFormatError
from genesis.models.codec import record_to_event

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from genesis.bus import EventBus

__all__ = [
    "CHUNK_BYTES",
    "LOGGED_BAD_LINES",
    "MAX_PAUSE_S",
    "ReplaySpeed",
    "ReplayStatistics",
    "event_time_ms",
    "replay_file",
    "replay_lines",
]

logger = logging.getLogger(__name__)

MAX_PAUSE_S: Final = 10.0
LOGGED_BAD_LINES: Final = 5
CHUNK_BYTES: Final = 1 << 20


class ReplaySpeed(enum.Enum):
    RECORDED = "recorded"
    FULL = "full"


@attrs.frozen(kw_only=True)
class ReplayStatistics:
    """What one replay did.

    Attributes:
        path: the file.
        lines: non-blank lines read.
        events: events published.
        bad_lines: lines skipped as unreadable.
        first_bad_line: the number of the first bad line (1-based), if any.
        by_type: events published per class name.
        shortened_pauses: pauses cut to ``max_pause_s`` (recorded speed).
    """

    path: str
    lines: int
    events: int
    bad_lines: int
    first_bad_line: int | None
    by_type: Mapping[str, int]
    shortened_pauses: int


def event_time_ms(event: object) -> int | None:
    """The wall-clock time (epoch ms) an event carries, if it carries one."""
    for name in ("event_time_ms", "received_ms", "at_ms", "updated_ms"):
        value = getattr(event, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@attrs.define
class _Pacer:
    """Maps recorded wall times onto the Trio clock, shortening long pauses."""

    max_pause_s: float
    start: float | None = None
    first_ms: int | None = None
    last_target: float = 0.0
    shortened: int = 0
    shift_s: float = 0.0

    def target(self, at_ms: int, now: float) -> float:
        if self.start is None or self.first_ms is None:
            self.start, self.first_ms, self.last_target = now, at_ms, now
            return now
        target = self.start + (at_ms - self.first_ms) / 1000 - self.shift_s
        if target - self.last_target > self.max_pause_s:
            self.shift_s += target - self.last_target - self.max_pause_s
            self.shortened += 1
            target = self.last_target + self.max_pause_s
        self.last_target = max(self.last_target, target)
        return target


def _log_bad_line(bad: int, number: int, exc: Exception) -> None:
    if bad <= LOGGED_BAD_LINES:
        reason = "not JSON" if isinstance(exc, orjson.JSONDecodeError) else str(exc)
        logger.warning("replay.bad_line line=%d reason=%s", number, reason)
    elif bad == LOGGED_BAD_LINES + 1:
        logger.warning("replay.bad_lines_quiet more bad lines are only counted")


@attrs.define
class _Replayer:
    """The state of one replay: decodes lines, paces and publishes their events."""

    bus: EventBus
    speed: ReplaySpeed
    pacer: _Pacer
    by_type: Counter[str] = attrs.field(factory=Counter)
    lines: int = 0
    bad: int = 0
    first_bad: int | None = None
    number: int = 0

    async def feed(self, batch: Iterable[bytes]) -> None:
        for raw in batch:
            self.number += 1
            if not raw.strip():
                continue
            self.lines += 1
            try:
                event = record_to_event(orjson.loads(raw))
            except (orjson.JSONDecodeError, RecordFormatError) as exc:
                self.bad += 1
                self.first_bad = self.number if self.first_bad is None else self.first_bad
                _log_bad_line(self.bad, self.number, exc)
                continue
            at_ms = event_time_ms(event) if self.speed is ReplaySpeed.RECORDED else None
            if at_ms is not None:
                await trio.sleep_until(self.pacer.target(at_ms, trio.current_time()))
            await self.bus.publish(event)
            self.by_type[type(event).__name__] += 1

    def finish(self, path: str) -> ReplayStatistics:
        stats = ReplayStatistics(
            path=path,
            lines=self.lines,
            events=sum(self.by_type.values()),
            bad_lines=self.bad,
            first_bad_line=self.first_bad,
            by_type=dict(self.by_type),
            shortened_pauses=self.pacer.shortened,
        )
        logger.log(
            logging.WARNING if self.bad else logging.INFO,
            "replay.done events=%d bad_lines=%d first_bad_line=%s shortened_pauses=%d",
            stats.events,
            stats.bad_lines,
            "-" if stats.first_bad_line is None else stats.first_bad_line,
            stats.shortened_pauses,
        )
        return stats


async def replay_lines(
    lines: Iterable[bytes],
    bus: EventBus,
    *,
    speed: ReplaySpeed = ReplaySpeed.RECORDED,
    max_pause_s: float = MAX_PAUSE_S,
    source: str = "<lines>",
) -> ReplayStatistics:
    """:func:`replay_file` for recording lines already in memory (each without its newline)."""
    replayer = _Replayer(bus, speed, _Pacer(max_pause_s))
    await replayer.feed(lines)
    return replayer.finish(source)


async def replay_file(
    path: str | os.PathLike[str],
    bus: EventBus,
    *,
    speed: ReplaySpeed = ReplaySpeed.RECORDED,
    max_pause_s: float = MAX_PAUSE_S,
) -> ReplayStatistics:
    """Publish every event of the recording at ``path`` on ``bus``, in file order.

    The file is read in chunks of :data:`CHUNK_BYTES` in a worker thread (``trio.open_file``).

    Args:
        path: a file written by ``genesis run --record``.
        bus: where the events go (``await bus.publish``: never-drop events wait for room,
            market data follows the bus's overflow policy).
        speed: as recorded, or as fast as possible.
        max_pause_s: the longest pause kept at recorded speed.

    Returns:
        The counts, once the whole file is published.

    Raises:
        OSError: the file cannot be opened or read (bad lines are not errors).
    """
    replayer = _Replayer(bus, speed, _Pacer(max_pause_s))
    async with await trio.open_file(path, "rb") as file:
        tail = b""
        while chunk := await file.read(CHUNK_BYTES):
            batch = (tail + chunk).split(b"\n")
            tail = batch.pop()
            await replayer.feed(batch)
        await replayer.feed([tail])
    return replayer.finish(os.fspath(path))
