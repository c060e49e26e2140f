"""The gateway's two market-data backfill calls against the in-memory simulator.

Expected figures come from the simulator's own trade record and kline series, never from the
gateway under test.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import trio
import trio.testing

from genesis.exchange.endpoints import ENDPOINTS
from genesis.models.exchange_info import RateLimitType
from tests.gateway_support import memory_gateway

if TYPE_CHECKING:
    from genesis.exchange.gateway import Gateway


def weight_used(gateway: Gateway) -> int:
    """REQUEST_WEIGHT used this minute, as the simulator's usage headers report it."""
    for bucket in gateway.limiter.statistics().buckets:
        if bucket.type is RateLimitType.REQUEST_WEIGHT and bucket.interval == "1M":
            return bucket.used
    raise AssertionError("no REQUEST_WEIGHT 1M bucket")


def make_trades(sim_step: object, steps: int, start_ms: int) -> None:
    """Let the simulator's market maker trade for ``steps`` steps of 100 ms."""
    assert callable(sim_step)
    for i in range(steps):
        sim_step(start_ms + i * 100)


async def test_historical_trades_pages_the_simulators_own_record(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m:
        make_trades(m.sim.market_maker.step, 600, m.sim.clock.now_ms())
        record = m.sim.exchange.recent_trades("BTCUSDT", 1000)
        assert len(record) > 10
        from_id = int(str(record[3]["id"]))
        used_before = weight_used(m.gateway)
        trades = await m.gateway.historical_trades("BTCUSDT", from_id=from_id, limit=5)
        used = weight_used(m.gateway) - used_before
    assert [t.trade_id for t in trades] == [int(str(r["id"])) for r in record[3:8]]
    assert [t.price for t in trades] == [Decimal(str(r["price"])) for r in record[3:8]]
    assert [t.buyer_is_maker for t in trades] == [r["isBuyerMaker"] for r in record[3:8]]
    assert all(t.symbol == "BTCUSDT" and t.trade_time_ms == t.event_time_ms for t in trades)
    assert used == ENDPOINTS["GET", "/api/v3/historicalTrades"].weight == 25


async def test_klines_marks_the_ones_already_over_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_gateway() as m:
        start_ms = m.sim.clock.now_ms()
        make_trades(m.sim.market_maker.step, 10, start_ms)
        await trio.sleep(150)  # the simulator's clock (and the gateway's) moves 2.5 minutes
        now_ms = m.sim.clock.now_ms()
        latest = await m.gateway.klines("BTCUSDT", "1m")
        ranged = await m.gateway.klines(
            "BTCUSDT", "1m", start_ms=latest[0].open_time_ms, end_ms=latest[1].open_time_ms, limit=5
        )
        wire = m.sim.exchange.klines("BTCUSDT", "1m", now_ms=now_ms)
    assert [k.open_time_ms for k in latest] == [row[0] for row in wire]
    assert [k.closed for k in latest] == [row[6] < now_ms for row in wire]  # type: ignore[operator]
    assert latest[-1].closed is False
    assert latest[0].closed is True
    assert [k.open_time_ms for k in ranged] == [k.open_time_ms for k in latest[:2]]
    assert all(k.interval == "1m" and k.symbol == "BTCUSDT" for k in latest)
