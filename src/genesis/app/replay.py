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
    from collections.abc import Mapping

    from genesis.bus import EventBus

__all__ = [
    "CHUNK_BYTES",
    "LOGGED_BAD_LINES",
    "MAX_PAUSE_S",
    "ReplaySpeed",
    "ReplayStatistics",
    "event_time_ms",
    "replay_file",
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


async def replay_file(
    path: str | os.PathLike[str],
    bus: EventBus,
    *,
    speed: ReplaySpeed = ReplaySpeed.RECORDED,
    max_pause_s: float = MAX_PAUSE_S,
) -> ReplayStatistics:
    """Publish every event of the recording at ``path`` on ``bus``, in file order.

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
    pacer = _Pacer(max_pause_s)
    by_type: Counter[str] = Counter()
    lines = bad = 0
    first_bad: int | None = None
    number = 0
    async with await trio.open_file(path, "rb") as file:
        tail = b""
        while True:
            chunk = await file.read(CHUNK_BYTES)
            batch = (tail + chunk).split(b"\n")
            tail = batch.pop() if chunk else b""
            for raw in batch:
                number += 1
                if not raw.strip():
                    continue
                lines += 1
                try:
                    event = record_to_event(orjson.loads(raw))
                except (orjson.JSONDecodeError, RecordFormatError) as exc:
                    bad += 1
                    first_bad = number if first_bad is None else first_bad
                    _log_bad_line(bad, number, exc)
                    continue
                at_ms = event_time_ms(event) if speed is ReplaySpeed.RECORDED else None
                if at_ms is not None:
                    await trio.sleep_until(pacer.target(at_ms, trio.current_time()))
                await bus.publish(event)
                by_type[type(event).__name__] += 1
            if not chunk:
                break
    stats = ReplayStatistics(
        path=os.fspath(path),
        lines=lines,
        events=sum(by_type.values()),
        bad_lines=bad,
        first_bad_line=first_bad,
        by_type=dict(by_type),
        shortened_pauses=pacer.shortened,
    )
    logger.log(
        logging.WARNING if bad else logging.INFO,
        "replay.done events=%d bad_lines=%d first_bad_line=%s shortened_pauses=%d",
        stats.events,
        stats.bad_lines,
        "-" if first_bad is None else first_bad,
        stats.shortened_pauses,
    )
    return stats
