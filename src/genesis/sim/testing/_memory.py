"""The in-memory WebSocket connector: ws_manager's connector seam wired to the simulator.

One connector for every test and soak that runs market data against the simulator without a
socket (under ``trio.testing.MockClock`` a day of traffic then passes in virtual time). It
speaks real WebSocket (trio-websocket over ``trio.testing.memory_stream_pair``) to the
simulator's own server code, so nothing above the transport is faked.

It also scripts what a network does to a client: refused or hung connection attempts, one
client address per role (so a fault can pick a role), and frames lost on the way in.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Protocol

import attrs
import trio
import trio_websocket

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MemoryConnector", "MemoryDialer"]


class MemoryDialer(Protocol):
    """Opens the client end of an in-memory connection whose server side runs in ``nursery``.

    ``Simulator.connect_ws_memory`` and ``StreamServer.connect_memory_stream`` are dialers.
    """

    def __call__(self, nursery: trio.Nursery, *, remote_ip: str) -> trio.abc.Stream: ...


@attrs.define(eq=False)
class _LossyWebSocket:
    """A client WebSocket whose inbound messages pass ``keep`` or are lost (a network's loss)."""

    ws: trio_websocket.WebSocketConnection
    keep: Callable[[str | bytes], bool]

    async def get_message(self) -> str | bytes:
        while True:
            message = await self.ws.get_message()
            if self.keep(message):
                return message

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        await self.ws.aclose(code, reason)

    async def ping(self, payload: bytes | None = None) -> None:
        await self.ws.ping(payload)


@attrs.define(eq=False)
class MemoryConnector:
    """A ``WebSocketConnector`` (exchange/ws_manager.py) over in-memory streams.

    Attributes:
        dial: Opens the transport to the server (see :class:`MemoryDialer`).
        server_nursery: Runs the server side of every connection.
        roles: With role names, each role's connections come from an address of its own,
            ``10.0.0.<n>`` for the n-th name (fixed: with jittered backoff the roles' first
            attempts come in any order); with a number, addresses go to roles in the order of
            their first attempts. A further role is a ``RuntimeError``; with ``None`` every
            connection comes from ``127.0.0.1``.
        attempts: The (Trio) time of every connection attempt, refused and hung ones included.
        refuse_next: Refuse this many next attempts (``OSError`` 111, as a closed port).
        hang_next: Hang this many next attempts until the caller's timeout.
        keep: When set, every inbound message of a new connection passes through it and is
            lost unless it returns True (close frames and pings are not messages).
    """

    dial: MemoryDialer
    server_nursery: trio.Nursery
    roles: int | tuple[str, ...] | None = None
    attempts: list[float] = attrs.field(factory=list)
    refuse_next: int = 0
    hang_next: int = 0
    keep: Callable[[str | bytes], bool] | None = None
    _addresses: dict[str, str] = attrs.field(factory=dict, init=False)

    async def __call__(
        self, nursery: trio.Nursery, url: str, *, message_queue_size: int, role: str = ""
    ) -> trio_websocket.WebSocketConnection | _LossyWebSocket:
        """Open a client WebSocket to ``url``'s path; its reader task runs in ``nursery``."""
        self.attempts.append(trio.current_time())
        if self.refuse_next:
            self.refuse_next -= 1
            await trio.lowlevel.checkpoint()
            raise OSError(111, "Connection refused")
        if self.hang_next:
            self.hang_next -= 1
            await trio.sleep_forever()
        parts = urllib.parse.urlsplit(url)
        stream = self.dial(self.server_nursery, remote_ip=self._address_of(role))
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]  # any trio Stream works; the annotation is narrower
            parts.hostname or "sim",
            f"{parts.path}?{parts.query}" if parts.query else parts.path,
            message_queue_size=message_queue_size,
        )
        if self.keep is not None:
            return _LossyWebSocket(ws, self.keep)
        return ws

    def _address_of(self, role: str) -> str:
        if self.roles is None:
            return "127.0.0.1"
        address = self._addresses.get(role)
        if address is None:
            if isinstance(self.roles, tuple):
                if role not in self.roles:
                    raise RuntimeError(f"memory connector: unknown role {role!r}")
                n = self.roles.index(role) + 1
            elif len(self._addresses) == self.roles:
                raise RuntimeError(f"memory connector: more roles than {self.roles}: {role!r}")
            else:
                n = len(self._addresses) + 1
            address = self._addresses[role] = f"10.0.0.{n}"
        return address
