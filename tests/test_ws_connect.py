"""dial_guarded: one connect attempt as one call through the breaker, and no leaked socket."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from genesis.errors import CircuitOpenError, ConnectError
from genesis.exchange.ws_connect import WebSocket, dial_guarded
from genesis.models.events import BreakerState, BreakerTransition
from genesis.resilience.circuit_breaker import CircuitBreaker


@attrs.define
class OpenedWebSocket:
    """A connection that opened; records whether it was closed."""

    closed: bool = False

    async def get_message(self) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        await trio.lowlevel.checkpoint()
        self.closed = True

    async def ping(self, payload: bytes | None = None) -> None:
        await trio.lowlevel.checkpoint()


async def close(ws: WebSocket) -> None:
    await ws.aclose()


async def refused() -> WebSocket:
    await trio.lowlevel.checkpoint()
    raise ConnectError("refused")


async def test_an_open_breaker_refuses_without_dialling_and_a_probe_closes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker("streams")  # 5 failures in 30 s, 60 s cooldown
    for _ in range(5):
        with pytest.raises(ConnectError):
            await dial_guarded(breaker, refused, close)
    dialled: list[float] = []

    async def dial() -> WebSocket:
        dialled.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        return OpenedWebSocket()

    with pytest.raises(CircuitOpenError):
        await dial_guarded(breaker, dial, close)
    assert dialled == []
    await trio.sleep(60)
    ws = await dial_guarded(breaker, dial, close)
    assert isinstance(ws, OpenedWebSocket)
    assert not ws.closed
    assert breaker.statistics().state is BreakerState.CLOSED
    assert await dial_guarded(None, dial, close) is not ws  # no breaker: just the dial


async def test_a_connection_is_closed_when_the_guard_raises_after_it_opened(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def sink(event: BreakerTransition, /) -> None:
        await trio.lowlevel.checkpoint()
        if event.state is BreakerState.CLOSED:  # the probe's success, published on the way out
            raise KeyboardInterrupt  # Ctrl-C, as the guard leaves: the breaker cannot catch it

    breaker = CircuitBreaker("streams", on_transition=sink)
    for _ in range(5):
        with pytest.raises(ConnectError):
            await dial_guarded(breaker, refused, close)
    await trio.sleep(60)
    opened = OpenedWebSocket()

    async def dial() -> WebSocket:
        await trio.lowlevel.checkpoint()
        return opened

    with pytest.raises(KeyboardInterrupt):
        await dial_guarded(breaker, dial, close)
    assert opened.closed  # ours to close: nobody else holds it
