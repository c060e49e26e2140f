"""Settings that point the whole client at a running simulator, as a user points it at testnet."""

from __future__ import annotations

from typing import TYPE_CHECKING

from genesis.config import Mode, Secret, Settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from genesis.sim.server import SimHandle

__all__ = ["settings_for"]


def settings_for(
    sim: SimHandle, symbols: Sequence[str] = ("BTCUSDT",), *, nats_url: str | None = None
) -> Settings:
    """Testnet-mode settings for ``sim``: its credentials, and every URL of it (REST, streams,
    the WS API), so nothing reaches for the real testnet."""
    return Settings(
        mode=Mode.TESTNET,
        api_key=Secret(sim.api_key),
        secret_key=Secret(sim.api_secret),
        rest_url=sim.rest_url,
        stream_url=sim.stream_url,
        ws_api_url=sim.ws_api_url,
        symbols=tuple(symbols),
        nats_url=nats_url,
    )
