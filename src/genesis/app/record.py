"""``genesis run --record PATH``: every bus event as one JSON line.

Each line is ``{"type": "<EventClass>", "symbol": ..., <fields>}`` as built by
:func:`genesis.models.codec.event_to_record` (Decimals as strings, book levels as
``[price, qty]`` pairs), serialised with orjson.

Recording must never slow the feed, so the work is split in two tasks:

- the *reader* takes events from a large bus subscription and only encodes them into an
  in-memory batch (the bus's overflow policy drops market data if even that falls behind,
  and the bus counts it);
- the *writer* hands the batch to a worker thread every :data:`FLUSH_INTERVAL_S` (sooner when it
  grows past :data:`FLUSH_BYTES`), writes and flushes it.

If the disk cannot keep up and the batch reaches ``max_pending_bytes``, further events are
dropped and counted (:attr:`RecorderStatistics.dropped`) rather than buffered without bound.
On cancellation the last batch is written under a shielded, bounded cleanup.

An existing file is never overwritten by accident: ``mode="new"`` (``--record PATH``) refuses
it with a :class:`~genesis.errors.ConfigError`; ``append`` (``--append``) adds to it and
``overwrite`` (``--force``) truncates it.

A recording that fails (disk full, I/O error) stops *the recording*, not the market data: an
ERROR line ``record.failed`` and an :class:`~genesis.models.events.Alert` of kind
``RECORDER_FAILED`` on the bus, the subscription is closed, and the task stays idle until the
tree stops.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Final, Literal, NoReturn, Protocol, TypeAlias

import attrs
import orjson
import trio

from genesis.errors import ConfigError
from genesis.models.codec import event_to_record
from genesis.models.events import Alert, AlertKind, AlertSeverity

if TYPE_CHECKING:
    from collections.abc import Callable

    from genesis.bus import EventBus

__all__ = [
    "CLEANUP_S",
    "FLUSH_BYTES",
    "FLUSH_INTERVAL_S",
    "RECORD_BUFFER",
    "RECORD_EXISTS_HINT",
    "RecordMode",
    "Recorder",
    "RecorderStatistics",
    "encode_event",
    "run_recorder",
]

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S: Final = 0.5
FLUSH_BYTES: Final = 256 * 1024
MAX_PENDING_BYTES: Final = 64 * 1024 * 1024
RECORD_BUFFER: Final = 65_536
"""Bus subscription size: about a minute of a busy feed for 2 symbols, a few MB of references."""
CLEANUP_S: Final = 0.5

RECORD_EXISTS_HINT: Final = "exists: add --append to add to it or --force to overwrite it"

RecordMode: TypeAlias = Literal["new", "append", "overwrite"]
"""``new``: refuse an existing file; ``append``: add to it; ``overwrite``: truncate it."""
_OPEN_MODES: Final = {"new": "xb", "append": "ab", "overwrite": "wb"}


def encode_event(event: object) -> bytes:
    """One JSON line (with the newline) for ``event``."""
    return orjson.dumps(event_to_record(event)) + b"\n"


@attrs.frozen(kw_only=True)
class RecorderStatistics:
    """Counters of one recording."""

    path: str
    recorded: int
    written_bytes: int
    dropped: int
    flushes: int
    failed: str | None = None


@attrs.define(eq=False)
class Recorder:
    """The state of a running recording; read it with :meth:`statistics`."""

    path: str
    max_pending_bytes: int = MAX_PENDING_BYTES
    recorded: int = 0
    written_bytes: int = 0
    dropped: int = 0
    flushes: int = 0
    failed: str | None = None
    """Why the recording stopped early (an I/O error), else ``None``."""
    _pending: list[bytes] = attrs.field(factory=list)
    _pending_bytes: int = 0
    _wake_writer: trio.Event = attrs.field(factory=trio.Event)

    def add(self, line: bytes) -> None:
        """Queue one encoded line; never blocks (drops and counts past the pending cap)."""
        if self._pending_bytes + len(line) > self.max_pending_bytes:
            self.dropped += 1
            return
        self._pending.append(line)
        self._pending_bytes += len(line)
        self.recorded += 1
        if self._pending_bytes >= FLUSH_BYTES:
            self._wake_writer.set()

    async def wait_for_batch(self, timeout_s: float) -> None:
        """Return after ``timeout_s``, or sooner once the batch is big enough to write."""
        with trio.move_on_after(timeout_s):
            await self._wake_writer.wait()
        self._wake_writer = trio.Event()

    def take_batch(self) -> bytes:
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        return data

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(
            path=self.path,
            recorded=self.recorded,
            written_bytes=self.written_bytes,
            dropped=self.dropped,
            flushes=self.flushes,
            failed=self.failed,
        )


async def run_recorder(
    bus: EventBus,
    path: str | os.PathLike[str],
    *,
    mode: RecordMode = "overwrite",
    flush_interval_s: float = FLUSH_INTERVAL_S,
    buffer_size: int = RECORD_BUFFER,
    wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    task_status: trio.TaskStatus[Recorder] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Record every event published on ``bus`` into ``path`` until cancelled.

    Args:
        bus: the bus; subscribed to every event type before ``started``, so nothing published
            after ``await nursery.start(run_recorder, ...)`` is missed.
        path: the JSON-lines file; closed when the task ends.
        mode: what to do with an existing file (:data:`RecordMode`).
        flush_interval_s: how often the pending batch is written and flushed.
        buffer_size: the bus subscription's size.
        wall_clock_ms: epoch-ms clock for the failure alert.
        task_status: receives the :class:`Recorder` once the file is open and subscribed.

    Raises:
        ConfigError: ``mode="new"`` and ``path`` exists.
        OSError: the file cannot be opened. A write that fails later does not raise: it stops
            the recording (ERROR, alert) and the task idles until cancelled.
    """
    name = os.fspath(path)
    try:
        file = await trio.open_file(name, _OPEN_MODES[mode])
    except FileExistsError:
        raise ConfigError([f"--record {name} {RECORD_EXISTS_HINT}"]) from None
    recorder = Recorder(path=name)
    try:
        try:
            async with bus.subscribe(object, buffer_size=buffer_size) as sub:

                async def read() -> None:
                    async for event in sub:
                        recorder.add(encode_event(event))

                async def write_periodically() -> NoReturn:
                    while True:
                        await recorder.wait_for_batch(flush_interval_s)
                        await _write(file, recorder)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    nursery.start_soon(write_periodically)
                    logger.info("record.start path=%s mode=%s", name, mode)
                    task_status.started(recorder)
        except* OSError as group:
            # The subscription is closed by now: the bus no longer holds events for us.
            leaf: BaseException = group
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            await _fail(bus, recorder, leaf, wall_clock_ms)
        await trio.sleep_forever()
        raise AssertionError("the recorder runs until cancelled")  # pragma: no cover
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_S) as cleanup:
            try:
                if recorder.failed is None:
                    await _write(file, recorder)
            except OSError as exc:
                recorder.failed = f"{type(exc).__name__}: {exc}"
                logger.error("record.failed path=%s error=%s", name, recorder.failed)
            finally:
                try:
                    await file.aclose()
                except OSError as exc:  # the buffered tail cannot be flushed either
                    logger.error(
                        "record.close_failed path=%s error=%s: %s", name, type(exc).__name__, exc
                    )
        if cleanup.cancelled_caught:
            logger.warning("record.close.timeout path=%s", name)
        stats = recorder.statistics()
        logger.info(
            "record.stop path=%s events=%d bytes=%d dropped=%d",
            name,
            stats.recorded,
            stats.written_bytes,
            stats.dropped,
        )


async def _fail(
    bus: EventBus, recorder: Recorder, exc: BaseException, wall_clock_ms: Callable[[], int]
) -> None:
    recorder.failed = f"{type(exc).__name__}: {exc}"
    recorder.take_batch()  # what could not be written is gone; keep no memory for it
    logger.error(
        "record.failed path=%s error=%s events=%d bytes=%d; recording stopped, market data "
        "continues",
        recorder.path,
        recorder.failed,
        recorder.recorded,
        recorder.written_bytes,
    )
    await bus.publish(
        Alert(
            kind=AlertKind.RECORDER_FAILED,
            severity=AlertSeverity.ERROR,
            message=f"recording to {recorder.path} stopped: {recorder.failed}",
            at_ms=wall_clock_ms(),
            subject=recorder.path,
            details=(("error", recorder.failed), ("recorded", str(recorder.recorded))),
        )
    )


class _AsyncBinaryFile(Protocol):
    async def write(self, data: bytes, /) -> int: ...
    async def flush(self) -> None: ...


async def _write(file: _AsyncBinaryFile, recorder: Recorder) -> None:
    data = recorder.take_batch()
    if data:
        await file.write(data)
        recorder.written_bytes += len(data)
    await file.flush()
    recorder.flushes += 1
