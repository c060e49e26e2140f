"""One task reads every market-data connection: one wake-up for the frames of all of them.

With a task per connection, the three redundant connections wake the process three times per
event (each copy arrives on its own socket, microseconds apart), and at a paced rate the cost of
a wake-up (the kernel's, Trio's run loop, a task switch) is most of the cost of an event. A
:class:`ReadGroup` instead waits on one epoll set of every attached connection's socket (the set
itself is a file descriptor Trio can wait on). When it wakes it reads every socket that has
data, hands each read's messages to that connection's *sink* (the relay's synchronous
bookkeeping and the merger), and before it sleeps again looks once more (``poll(0)``, up to
:data:`MAX_SWEEPS` times), which catches the copies that arrived while it worked. The copies of
one event cost one wake-up, not three.

What the connection tasks keep: connecting, the liveness deadlines, probes, rotation and
closing; while attached, a connection task waits in
:meth:`~.ws_transport.FastWebSocket.wait_closed` (which also writes any control frame a read
could not write at once) and sees the end of its connection, or its sink's failure, as an
exception there, as it would from a read of its own. Pings are answered inside the read, before
the messages go to the sink, so a pong still never waits for a consumer (ARCHITECTURE.md §7);
the sinks never block (the bus's ``publish_nowait``).

Connections of :class:`~.ws_transport.FastWebSocket` over a socket can be attached, plain TCP
and TLS alike (:class:`~.ws_tls.TlsSocketStream` leaves nothing decrypted behind a read, so the
socket's readiness is the stream's); in-memory test connections are read by their own task.
Linux's epoll only (:func:`supported`); elsewhere every connection reads itself.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, NoReturn, TypeAlias

import attrs
import trio

if TYPE_CHECKING:
    from genesis.exchange.ws_transport import FastWebSocket

__all__ = ["MAX_SWEEPS", "ReadGroup", "ReadGroupStatistics", "Sink", "supported"]

MAX_SWEEPS: Final = 4
"""Looks at the sockets per wake-up before the task yields (bounds a round under a burst)."""

Sink: TypeAlias = Callable[[Sequence[str | bytes], float], None]
"""Takes one read's messages and the (Trio) time they were read; must not block."""


def supported() -> bool:
    """Whether this platform has epoll (a set of sockets Trio can wait on as one)."""
    return hasattr(select, "epoll")


@attrs.frozen
class ReadGroupStatistics:
    """Counters of one :class:`ReadGroup`."""

    attached: int
    """Connections attached now."""
    wakeups: int
    """Times the task woke for data."""
    reads: int
    """Reads that returned data (or the end of a connection)."""


@attrs.define(eq=False)
class _Member:
    ws: FastWebSocket
    sink: Sink


class ReadGroup:
    """Reads every attached connection from one task (:meth:`run`)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._members: dict[int, _Member] = {}
        self._changed = trio.lowlevel.ParkingLot()
        self._wakeups = 0
        self._reads = 0
        self._closed = False

    def statistics(self) -> ReadGroupStatistics:
        return ReadGroupStatistics(
            attached=len(self._members), wakeups=self._wakeups, reads=self._reads
        )

    def attach(self, ws: FastWebSocket, sink: Sink) -> bool:
        """Read ``ws`` from now on and hand every read's messages to ``sink`` with the time.

        Messages already read (with the handshake's answer) go to ``sink`` at once. Returns
        ``False`` (nothing attached) for a connection that has no socket to wait on; its task
        reads it. ``sink`` must not block; an exception from it ends the connection's
        :meth:`~.ws_transport.FastWebSocket.wait_closed` with that exception.
        """
        fd = ws.fileno
        if fd is None or self._closed:
            return False
        existing = self._members.get(fd)
        if existing is not None:
            if existing.ws.fileno is not None:
                return False  # attached already
            self._drop(fd)  # an ended connection whose number the kernel gave to this one
        self._epoll.register(fd, select.EPOLLIN)
        member = self._members[fd] = _Member(ws, sink)
        self._changed.unpark_all()
        self._deliver(fd, member, trio.current_time())
        return True

    def detach(self, ws: FastWebSocket) -> None:
        """Stop reading ``ws`` (idempotent); call it before the connection is closed."""
        for fd, member in list(self._members.items()):
            if member.ws is ws:
                self._drop(fd)

    async def run(self) -> NoReturn:
        """Read the attached connections as their data arrives, until cancelled."""
        epoll = self._epoll
        try:
            while True:
                if not self._members:
                    await self._changed.park()
                    continue
                await trio.lowlevel.wait_readable(epoll)
                self._wakeups += 1
                for _ in range(MAX_SWEEPS):
                    ready = epoll.poll(0)
                    if not ready:
                        break
                    now = trio.current_time()
                    for fd, _events in ready:
                        member = self._members.get(fd)
                        if member is not None and member.ws.read_nowait():
                            self._reads += 1
                            self._deliver(fd, member, now)
        finally:
            self._closed = True
            for fd in list(self._members):
                self._drop(fd)
            epoll.close()

    def _deliver(self, fd: int, member: _Member, now: float) -> None:
        ws = member.ws
        messages = ws.take_messages()
        if messages:
            try:
                member.sink(messages, now)
            except Exception as exc:  # the connection task's to raise, as from its own read
                self._drop(fd)
                ws.fail(exc)
                return
        if ws.fileno is None:  # the connection ended: its task sees why in wait_closed
            self._drop(fd)

    def _drop(self, fd: int) -> None:
        if self._members.pop(fd, None) is not None:
            with contextlib.suppress(OSError):  # closed under us: the kernel dropped it already
                self._epoll.unregister(fd)
