"""The merger's fault counting: hostile input counted by kind, each kind logged at most once
per interval (:class:`FaultCounter`, owned by :class:`~genesis.exchange.merger.Merger`).

Logs: ``ws.merger.fault`` (WARNING).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from genesis.exchange.merger import FrameSource

__all__ = ["FaultCounter"]

logger = logging.getLogger("genesis.exchange.merger")
"""The merger's logger: the split into modules does not change a log name."""


@attrs.define(eq=False)
class FaultCounter:
    """Counts of hostile input by kind (``invalid_json``, ``close_4001``...).

    Args:
        log_interval_s: Each kind is logged at most once per this interval (Trio seconds).
    """

    log_interval_s: float
    faults: dict[str, int] = attrs.field(factory=dict, init=False)
    decode_errors: int = attrs.field(default=0, init=False)
    """Frames refused as malformed (every frame kind in ``faults``)."""
    _logged_at: dict[str, float] = attrs.field(factory=dict, init=False)

    def frame_fault(
        self, source: FrameSource, kind: str, detail: str, raw: str | bytes, now: float
    ) -> None:
        """A frame refused: counted as a decode error and by ``kind``."""
        self.decode_errors += 1
        self.count(kind, f"role={source.name} {detail} frame={raw[:80]!r}", now)

    def count(self, kind: str, detail: str, now: float) -> None:
        count = self.faults[kind] = self.faults.get(kind, 0) + 1
        logged_at = self._logged_at.get(kind)
        if logged_at is not None and now - logged_at < self.log_interval_s:
            return
        self._logged_at[kind] = now
        logger.warning("ws.merger.fault kind=%s count=%d %s", kind, count, detail)
