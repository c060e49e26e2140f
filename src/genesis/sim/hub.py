"""Fan-out of market stream payloads inside the simulator.

The market feed publishes each payload once, already serialised, under its stream name
(``btcusdt@trade``); every WebSocket connection subscribed to that stream receives it on its
own bounded channel. Payloads are the raw JSON bytes of the *data* object, so a combined-stream
connection wraps them as ``{"stream":"<name>","data":<raw>}`` without re-encoding.

A subscriber that cannot keep up loses the payloads that do not fit and has ``dropped``
counted; the stream server decides what to do about it (Binance disconnects slow consumers).
Publishing never blocks, so one slow client can never stall the feed for the others.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["HubStatistics", "StreamHub", "Subscriber"]


@attrs.define(eq=False)
class Subscriber:
    """One consumer's view of the hub: a bounded channel and the streams it wants."""

    send_chan: trio.MemorySendChannel[tuple[str, bytes]]
    recv_chan: trio.MemoryReceiveChannel[tuple[str, bytes]]
    streams: set[str] = attrs.field(factory=set)
    delivered: int = 0
    dropped: int = 0


@attrs.frozen(kw_only=True)
class HubStatistics:
    """Counters for the whole hub."""

    published: int
    delivered: int
    dropped: int
    subscribers: int
    streams: int


@attrs.define(eq=False)
class StreamHub:
    """Routes ``(stream, payload)`` pairs to the subscribers of ``stream``."""

    _by_stream: dict[str, set[Subscriber]] = attrs.field(factory=dict, init=False)
    _subscribers: set[Subscriber] = attrs.field(factory=set, init=False)
    _published: int = attrs.field(default=0, init=False)
    _delivered: int = attrs.field(default=0, init=False)
    _dropped: int = attrs.field(default=0, init=False)

    def open_subscriber(self, buffer_size: int = 1024) -> Subscriber:
        """Register a new subscriber with no streams. Release it with :meth:`close_subscriber`."""
        if buffer_size < 1 or buffer_size == math.inf:
            raise ValueError("buffer_size must be a positive finite number")
        send_chan, recv_chan = trio.open_memory_channel[tuple[str, bytes]](buffer_size)
        sub = Subscriber(send_chan=send_chan, recv_chan=recv_chan)
        self._subscribers.add(sub)
        return sub

    def close_subscriber(self, sub: Subscriber) -> None:
        """Forget ``sub`` and close its send side (its reader sees end-of-channel)."""
        self.unsubscribe(sub, list(sub.streams))
        self._subscribers.discard(sub)
        sub.send_chan.close()

    def subscribe(self, sub: Subscriber, streams: Iterable[str]) -> None:
        for name in streams:
            sub.streams.add(name)
            self._by_stream.setdefault(name, set()).add(sub)

    def unsubscribe(self, sub: Subscriber, streams: Iterable[str]) -> None:
        for name in streams:
            sub.streams.discard(name)
            subs = self._by_stream.get(name)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_stream[name]

    def has_subscribers(self, stream: str) -> bool:
        """Whether anyone listens to ``stream`` (lets the feed skip building unwanted payloads)."""
        return stream in self._by_stream

    def active_streams(self) -> frozenset[str]:
        return frozenset(self._by_stream)

    def publish(self, stream: str, payload: bytes) -> int:
        """Deliver ``payload`` to every subscriber of ``stream``; never blocks.

        Returns the number of subscribers that received it.
        """
        self._published += 1
        subs = self._by_stream.get(stream)
        if not subs:
            return 0
        n = 0
        for sub in subs:
            try:
                sub.send_chan.send_nowait((stream, payload))
            except trio.WouldBlock:
                sub.dropped += 1
                self._dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The reader went away; the stream server removes it when its handler exits.
                sub.dropped += 1
                self._dropped += 1
            else:
                sub.delivered += 1
                n += 1
        self._delivered += n
        return n

    def statistics(self) -> HubStatistics:
        return HubStatistics(
            published=self._published,
            delivered=self._delivered,
            dropped=self._dropped,
            subscribers=len(self._subscribers),
            streams=len(self._by_stream),
        )
