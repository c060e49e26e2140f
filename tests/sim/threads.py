"""Running python-binance's blocking calls from Trio tests without leaking asyncio loops."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["in_thread"]

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a worker thread that has its own asyncio loop, closed afterwards.

    python-binance's constructors look up (or create) the thread's event loop; giving each call
    a fresh one and closing it keeps worker threads from leaving unclosed loops behind, which
    pytest reports as unraisable ResourceWarnings at exit (an error with filterwarnings=error).
    """

    def call() -> T:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            return fn(*args)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    return await trio.to_thread.run_sync(call)
