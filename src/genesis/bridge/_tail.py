"""``genesis tail SUBJECT``: print bridged events as JSON lines, decoded through a local bus.

Each line is the event's record (:func:`~genesis.models.codec.event_to_record`), i.e. what
``genesis run --record`` writes, after the message went through :func:`~genesis.bridge.subscribe`
and a local :class:`~genesis.bus.EventBus`, so it shows exactly what a consumer process sees.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson
import trio

from genesis.bridge._consumer import ConsumerConfig, run_consumer
from genesis.bus import EventBus
from genesis.models.codec import event_to_record

if TYPE_CHECKING:
    from typing import TextIO

__all__ = ["run_tail"]

logger = logging.getLogger(__name__)


async def run_tail(
    config: ConsumerConfig,
    out: TextIO,
    *,
    count: int | None = None,
    duration_s: float | None = None,
) -> int:
    """Print events of ``config.subjects`` to ``out`` until ``count`` events, ``duration_s``,
    or cancellation.

    Returns:
        The number of events printed.
    """
    bus = EventBus(policies={})  # a printer never drops: the broker holds what waits
    printed = 0
    with trio.move_on_after(duration_s if duration_s is not None else float("inf")):
        async with bus.subscribe(object, buffer_size=4096) as sub, trio.open_nursery() as nursery:
            await nursery.start(run_consumer, config, bus)
            async for event in sub:
                out.write(orjson.dumps(event_to_record(event)).decode() + "\n")
                out.flush()
                printed += 1
                if count is not None and printed >= count:
                    nursery.cancel_scope.cancel()
                    break
    return printed
