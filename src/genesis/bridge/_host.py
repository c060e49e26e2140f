"""An asyncio event loop in a worker thread, driven from Trio: where nats-py runs.

nats-py is an asyncio library. The bridge gives it an event loop of its own in one worker
thread. Control operations (connect, stream checks, order-event publishes) use
:meth:`AsyncioThread.call`, which schedules a coroutine on that loop
(``asyncio.run_coroutine_threadsafe``) and waits for its result without blocking the Trio loop;
the hot paths hand batches over with :meth:`AsyncioThread.call_soon` and get their answers back
through ``TrioToken.run_sync_soon``, so no event waits for a round trip between the threads.

Chosen over trio-asyncio (the asyncio loop run inside the Trio loop) because, with the same
bridge code on both through the :class:`AsyncioHost` seam, it used less CPU per event at the
target rate (``scripts/bench_bridge.py hosts``; figures in the README): the bridge crosses
once per *batch*, so the hops are amortised, and nats-py's own work runs outside the Trio
loop's time slices instead of adding to every Trio scheduling pass.

The thread lives exactly as long as :func:`open_asyncio_thread`'s block: it is a child of a
private nursery, the loop is stopped in ``finally`` and the block waits for the thread to end.
A Trio call that is cancelled cancels its asyncio task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Protocol, TypeVar, TypeVarTuple, Unpack

import trio

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import AsyncIterator, Callable, Coroutine, Iterator

__all__ = ["AsyncioHost", "AsyncioThread", "lone_error_bare", "open_asyncio_thread"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


class AsyncioHost(Protocol):
    """Where the bridge's asyncio code runs: the seam between Trio and nats-py."""

    async def call(self, coro_fn: Callable[[], Coroutine[object, object, _T]]) -> _T:
        """Run ``coro_fn()`` on the asyncio side and return its result (or raise its error)."""
        ...

    def call_soon(self, fn: Callable[[Unpack[_Ts]], object], *args: *_Ts) -> None:
        """Schedule the plain function ``fn(*args)`` on the asyncio loop; never blocks."""
        ...


class AsyncioThread:
    """A handle on the asyncio loop of :func:`open_asyncio_thread`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken) -> None:
        self._loop = loop
        self._token = token
        self.calls = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    async def call(self, coro_fn: Callable[[], Coroutine[object, object, _T]]) -> _T:
        """Run ``coro_fn()`` on the asyncio loop and return its result (or raise its error).

        Cancellation of the caller cancels the asyncio task; the call then raises
        :class:`trio.Cancelled` once the task has been told (it does not wait for it to end).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self.calls += 1
        future = asyncio.run_coroutine_threadsafe(coro_fn(), self._loop)
        done = trio.Event()

        def wake(_future: concurrent.futures.Future[_T]) -> None:
            with contextlib.suppress(trio.RunFinishedError):  # the Trio run ended first
                self._token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        finally:
            if not future.done():
                future.cancel()
        return future.result()

    def call_soon(self, fn: Callable[[Unpack[_Ts]], object], *args: *_Ts) -> None:
        """Schedule ``fn(*args)`` on the asyncio loop (thread-safe, FIFO); never blocks.

        For the hot paths: handing a batch over costs one wake-up of the loop's thread, and the
        Trio side does not wait for it. ``fn`` reports back itself (``TrioToken.run_sync_soon``).
        """
        self.calls += 1
        self._loop.call_soon_threadsafe(fn, *args)


@contextlib.contextmanager
def lone_error_bare() -> Iterator[None]:
    """Re-raise a nursery's single error bare instead of inside an exception group."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            raise group.exceptions[0] from None
        raise


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@asynccontextmanager
async def open_asyncio_thread() -> AsyncIterator[AsyncioThread]:
    """A fresh asyncio loop running in a worker thread for the duration of the block.

    On exit the loop is stopped (its remaining tasks cancelled) and the block waits for the
    thread to end, so nothing of it outlives the caller. Close what runs on the loop (a NATS
    connection) before leaving the block.
    """
    loop = asyncio.new_event_loop()
    host = AsyncioThread(loop, trio.lowlevel.current_trio_token())
    # A private limiter: the long-lived thread must not hold one of Trio's shared tokens.
    limiter = trio.CapacityLimiter(1)
    with lone_error_bare():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(
                    trio.to_thread.run_sync, _serve, loop, limiter=limiter, abandon_on_cancel=False
                )
            )
            try:
                yield host
            finally:
                loop.call_soon_threadsafe(loop.stop)
    logger.debug("bridge.asyncio_thread.stopped calls=%d", host.calls)
