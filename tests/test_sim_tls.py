"""The whole tree over ``wss://``, as against Binance: the simulator serves TLS on loopback.

Production streams and the WS API are TLS only, so this is the path every real user runs: the
three market-data connections are read by the shared reader through ``TlsSocketStream``, and
the user data stream speaks to the WS API over TLS. The client trusts the simulator's CA the
way it would trust any CA: through ``SSL_CERT_FILE`` and its default contexts.
"""

from __future__ import annotations

from decimal import Decimal as D
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio

from genesis.app.run import run_genesis
from genesis.exchange import ws_reader
from genesis.models.events import OrderUpdate, OrderUpdateSource
from genesis.models.market import Trade
from genesis.models.orders import OrderRequest, OrderSide
from genesis.orders.manager import PlaceOrder
from genesis.sim.server import SimConfig, run_simulator
from genesis.sim.testing import loopback_tls, trusted_by_default
from genesis.testing import settings_for

if TYPE_CHECKING:
    from genesis.app.run import GenesisHandle
    from genesis.sim.server import SimHandle

pytest.importorskip("trustme")


@pytest.mark.skipif(not ws_reader.supported(), reason="the shared reader needs epoll")
async def test_the_tree_runs_over_wss_with_the_shared_reader_and_the_user_stream() -> None:
    with loopback_tls() as tls, trusted_by_default(tls), trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            sim: SimHandle = await nursery.start(
                run_simulator, SimConfig(symbols=("BTCUSDT",), ssl_context=tls.server_context)
            )
            assert sim.stream_url.startswith("wss://127.0.0.1:")
            assert sim.ws_api_url.startswith("wss://127.0.0.1:")
            handle: GenesisHandle = await nursery.start(
                partial(run_genesis, settings_for(sim), handle_signals=False)
            )
            trades = handle.bus.subscribe(Trade)
            updates = handle.bus.subscribe(OrderUpdate)
            await handle.market_data.wait_all_receiving()
            first = await trades.receive()
            assert handle.user_stream is not None
            await handle.user_stream.wait_subscribed()
            request = OrderRequest.limit(
                symbol="BTCUSDT",
                side=OrderSide.BUY,
                quantity=D("0.001"),
                price=D("30000"),
                client_order_id="tls-1",
            )
            await handle.orders.send(PlaceOrder(request=request))
            sources = set()
            while OrderUpdateSource.USER_STREAM not in sources:
                update = await updates.receive()
                assert update.order.client_order_id == "tls-1"
                sources.add(update.source)
            stats = handle.market_data.statistics()
            nursery.cancel_scope.cancel()
    assert first.symbol == "BTCUSDT"
    # All three connections were TLS and read by the one shared reader.
    assert stats.reader is not None
    assert stats.reader.attached == 3
    assert stats.reader.reads > 0
    assert stats.merger.decode_errors == 0
    assert stats.merger.duplicates_dropped > 0
