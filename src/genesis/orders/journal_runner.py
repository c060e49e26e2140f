"""Where the order journal's statements run: a worker thread, one call at a time.

:class:`JournalRunner` is owned by :class:`~genesis.orders.journal.Journal` (whose docstring
has the rules): each call's statements run in a worker thread (``trio.to_thread.run_sync``)
under a :class:`trio.Lock`, so the event loop never waits on the disk; an in-memory journal
runs them on the loop itself. A call cancelled while it waits for its turn does nothing; once
its statements run they are not abandoned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import trio

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

__all__ = ["JournalRunner"]

_T = TypeVar("_T")


class JournalRunner:
    """Runs work on one ``sqlite3`` connection, one call at a time; closes it once.

    Args:
        conn: The journal's connection (opened with ``check_same_thread=False``).
        inline: Run on the loop itself (an in-memory journal touches no disk; that also keeps
            virtual-time tests deterministic, as a MockClock would jump while a thread runs).
    """

    def __init__(self, conn: sqlite3.Connection, *, inline: bool) -> None:
        self._conn = conn
        self._inline = inline
        self._lock = trio.Lock()
        self._closed = False

    async def run(self, work: Callable[[], _T]) -> _T:
        """``work()`` in its turn; ``sqlite3.Error`` propagates for the journal to translate.

        Raises:
            trio.ClosedResourceError: the journal is closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("the journal is closed")
        async with self._lock:
            if self._inline:
                await trio.lowlevel.checkpoint()
                return work()
            return await trio.to_thread.run_sync(work)

    async def aclose(self) -> None:
        """Refuse new calls, wait for the one in flight, close the connection."""
        self._closed = True
        # Shielded, so a cancelled owner still closes the file. Bounded without a timeout: an
        # in-flight call holds the lock only for its statements (each waits BUSY_TIMEOUT_MS at
        # most), and abandoning a worker thread would leave it using a closed connection.
        with trio.CancelScope(shield=True):
            async with self._lock:
                if self._inline:
                    self._conn.close()
                else:
                    await trio.to_thread.run_sync(self._conn.close)
