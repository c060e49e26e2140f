"""The gateway against Binance's Spot testnet: place, check, cancel. Skipped unless configured.

Runs only when ``BINANCE_API_KEY`` (with ``BINANCE_SECRET_KEY`` or ``BINANCE_PRIVATE_KEY_PATH``)
and ``BINANCE_TESTNET=true`` are set, e.g.::

    BINANCE_TESTNET=true BINANCE_API_KEY=... BINANCE_SECRET_KEY=... .venv/bin/pytest -m testnet

The default suite (CI, a fresh clone) never reaches the internet: without those variables every
test here is skipped. The order is a LIMIT BUY far below the market (half the best bid, rounded
down to the tick), so it rests and is cancelled; testnet funds are virtual.
"""

from __future__ import annotations

import os
from decimal import Decimal

import pytest
import trio

from genesis.config import Mode, load_settings
from genesis.exchange.gateway import open_gateway
from genesis.models.orders import OrderRequest, OrderSide, OrderStatus

_CONFIGURED = bool(os.environ.get("BINANCE_API_KEY")) and os.environ.get(
    "BINANCE_TESTNET", ""
).strip().lower() in {"true", "1", "yes"}

pytestmark = [
    pytest.mark.testnet,
    pytest.mark.skipif(
        not _CONFIGURED, reason="set BINANCE_API_KEY and BINANCE_TESTNET=true to run on testnet"
    ),
]

SYMBOL = os.environ.get("GENESIS_TESTNET_SYMBOL", "BTCUSDT")


async def test_testnet_place_check_cancel() -> None:
    settings = load_settings(env_file=None)
    assert settings.mode is Mode.TESTNET
    with trio.fail_after(60):
        async with open_gateway(settings) as gw:
            info = gw.cached_exchange_info
            assert info is not None, "exchangeInfo could not be read from the testnet"
            symbol = info.symbol(SYMBOL)
            assert symbol is not None
            tick = symbol.filters.tick_size or Decimal("0.01")
            step = symbol.filters.step_size or Decimal("0.00001")
            depth = await gw.depth(SYMBOL, limit=5)
            assert depth.best_bid is not None
            price = (depth.best_bid.price / 2 // tick) * tick
            min_notional = symbol.filters.min_notional or Decimal(10)
            quantity = (min_notional * 2 / price // step + 1) * step
            placed = await gw.place_order(
                OrderRequest.limit(
                    symbol=SYMBOL, side=OrderSide.BUY, quantity=quantity, price=price
                )
            )
            try:
                assert placed.exchange_status == "NEW"
                found = await gw.get_order(SYMBOL, client_order_id=placed.client_order_id)
                assert found.exchange_order_id == placed.exchange_order_id
                assert (found.price, found.quantity) == (price, quantity)
            finally:
                cancelled = await gw.cancel_order(SYMBOL, order_id=placed.exchange_order_id)
            assert cancelled.status is OrderStatus.CANCELLED
            stats = gw.statistics()
            assert stats.time_sync.synced
            assert stats.rejected == 0
