"""Record the VCR.py cassettes that ``tests/test_cassettes.py`` replays, from the simulator.

Usage::

    python scripts/record_cassettes.py [--out tests/cassettes] [--only NAME ...]

Each scenario gets a fresh simulator on 127.0.0.1 (``run_simulator``, seed :data:`SEED`, clock
anchored at :data:`EPOCH_MS`) and a gateway talking to it over real sockets through httpx's
default transport, which vcrpy patches: everything the gateway sends inside
``vcr.use_cassette(path, record_mode="all")`` is written to ``<out>/<scenario>.yaml``. Setup
that is not the gateway's business (lowering a limit, another client getting the IP banned)
happens *outside* the cassette, so a cassette holds the gateway's own requests only.

Requests are matched on method, path and query with ``timestamp`` and ``signature`` filtered
out (they differ on every run); ``X-MBX-APIKEY`` is not stored. Every client order id is fixed,
so a replay sends the same queries. To keep the cassettes small and a re-recording identical,
the loopback origin is stored as :data:`RECORDED_ORIGIN`, and the request headers httpx adds
(``Host``, ``Accept``, ...) and the ``Date`` and ``Server`` response headers are dropped: the
gateway reads none of them.

Scenarios (one cassette each):

- ``happy_path``: open with ``prepare=True`` (a time sync, exchangeInfo), then every gateway
  method once successfully: ping, server_time, sync_time, exchange_info(["BTCUSDT"]), depth,
  test_order, place_order (LIMIT; MARKET with fills), get_order (by client id, by order id),
  open_orders (one symbol, all), cancel_order, cancel_open_orders, account, my_trades.
- ``rejections``: -1013 (NOTIONAL filter), -2010 (insufficient balance), -2013 (query an unknown
  order), -2011 (cancel an unknown order); all HTTP 400.
- ``read_503``: an injected 503 on ``GET /api/v3/account`` (-1008), then the same read again.
- ``execute_then_503``: the placement executes but is answered 503 -1007; the order is found.
- ``clock_skew``: the exchange is 7 s behind: -1021, one ``GET /api/v3/time``, the retry.
- ``rate_limited``: the weight limit lowered to 5/min behind the gateway's back; five pings,
  the sixth is answered 429 (the last request of the cassette: the gateway's limiter then holds
  every request for ``Retry-After`` seconds).
- ``ip_banned``: a second, plain httpx client (outside the cassette) keeps going after 429s
  and gets the IP banned; the gateway's one ping is answered 418.

Recording runs under ``trio.testing.MockClock()`` (rate 0, no autojump): loopback I/O is real,
but virtual time stands still, so the market feed never ticks after its first, seeded step,
every clock (the simulator's and the gateway's) reads :data:`EPOCH_MS`, and a re-recording
writes the same bytes. (Nothing here may wait on the clock: a ``trio.sleep`` would never end.
That is also why the 429 must be the last request of its cassette.) The tests still read
their expected figures from the cassettes, not from constants.
"""

from __future__ import annotations

import argparse
import logging
import sys
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import attrs
import httpx
import trio
import trio.testing
import vcr
import vcr.request

from genesis.config import Secret, Settings
from genesis.errors import (
    ExchangeRejectedError,
    ExchangeUnavailableError,
    GenesisError,
    IpBannedError,
    OrderOutcomeUnknownError,
    RateLimitedError,
)
from genesis.exchange.gateway import GatewayConfig, open_gateway
from genesis.exchange.signing import HmacSigner
from genesis.models.orders import OrderRequest, OrderSide
from genesis.sim.clock import DEFAULT_VIRTUAL_EPOCH_MS, SimClock
from genesis.sim.server import SimConfig, SimHandle, run_simulator

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from genesis.exchange.gateway import Gateway

__all__ = ["SCENARIOS", "Scenario", "main", "recorder"]

logger = logging.getLogger("record_cassettes")

CASSETTE_DIR: Final = Path(__file__).resolve().parents[1] / "tests" / "cassettes"
SEED: Final = 7
EPOCH_MS: Final = DEFAULT_VIRTUAL_EPOCH_MS + 3_000
"""Three seconds past a minute boundary: the recording never straddles a 1-minute window."""
SYMBOL: Final = "BTCUSDT"
CONFIG: Final = GatewayConfig(time_sync_samples=1)
"""One ``GET /api/v3/time`` per time sync keeps the cassettes small; replays use the same."""
MATCH_ON: Final = ("method", "path", "query")
FILTERED_QUERY: Final = ("timestamp", "signature")
FILTERED_HEADERS: Final = ("X-MBX-APIKEY",)
RECORDED_ORIGIN: Final = "http://sim.invalid"
"""Stands in for ``http://127.0.0.1:<free port>`` in the stored URIs (host and port are not
matched; ``.invalid`` never resolves, RFC 2606)."""
_NOISE_HEADERS: Final = ("host", "accept", "accept-encoding", "connection", "content-length")
_DROPPED_RESPONSE_HEADERS: Final = frozenset({"date", "server"})
_E = TypeVar("_E", bound=GenesisError)


def recorder(cassette_dir: Path) -> vcr.VCR:
    """The vcrpy configuration the cassettes are recorded with."""
    return vcr.VCR(
        cassette_library_dir=str(cassette_dir),
        serializer="yaml",
        record_mode="all",
        match_on=MATCH_ON,
        filter_query_parameters=FILTERED_QUERY,
        filter_headers=(*FILTERED_HEADERS, *_NOISE_HEADERS),
        before_record_request=_stable_origin,
        before_record_response=_trim_response,
    )


def _stable_origin(request: vcr.request.Request) -> vcr.request.Request:
    parsed = urlsplit(request.uri)
    request.uri = urlunsplit(
        urlsplit(RECORDED_ORIGIN)._replace(path=parsed.path, query=parsed.query)
    )
    return request


def _trim_response(response: dict[str, object]) -> dict[str, object]:
    headers = response.get("headers")
    if isinstance(headers, dict):
        response["headers"] = {
            name: value
            for name, value in headers.items()
            if str(name).lower() not in _DROPPED_RESPONSE_HEADERS
        }
    return response


def limit_buy(
    client_order_id: str, *, price: str = "50000", quantity: str = "0.001"
) -> OrderRequest:
    return OrderRequest.limit(
        symbol=SYMBOL,
        side=OrderSide.BUY,
        quantity=Decimal(quantity),
        price=Decimal(price),
        client_order_id=client_order_id,
    )


async def _expect(kind: type[_E], call: Awaitable[object]) -> _E:
    """Await ``call`` and return the ``kind`` it raised; anything else is a broken recording."""
    try:
        await call
    except kind as exc:
        print(f"    raised {type(exc).__name__}: {exc}")
        return exc
    raise RuntimeError(f"expected {kind.__name__}, but the call succeeded")


# --- scenarios -----------------------------------------------------------------------------------


async def _happy_path(_handle: SimHandle, gw: Gateway) -> None:
    await gw.ping()
    await gw.server_time()
    await gw.sync_time()
    await gw.exchange_info([SYMBOL])
    await gw.depth(SYMBOL, limit=5)
    await gw.test_order(limit_buy("cassette-test-1"))
    placed = await gw.place_order(limit_buy("cassette-limit-1"))
    assert placed.exchange_order_id is not None
    await gw.get_order(SYMBOL, client_order_id="cassette-limit-1")
    await gw.get_order(SYMBOL, order_id=placed.exchange_order_id)
    await gw.open_orders(SYMBOL)
    await gw.cancel_order(SYMBOL, client_order_id="cassette-limit-1")
    await gw.place_order(limit_buy("cassette-limit-2", price="49000"))
    await gw.place_order(limit_buy("cassette-limit-3", price="48000"))
    await gw.open_orders()
    await gw.cancel_open_orders(SYMBOL)
    market = await gw.place_order(
        OrderRequest.market(
            symbol=SYMBOL,
            side=OrderSide.BUY,
            quantity=Decimal("0.001"),
            client_order_id="cassette-market-1",
        )
    )
    assert market.exchange_order_id is not None
    assert market.fills, "the MARKET order should have filled against the simulator's book"
    await gw.my_trades(SYMBOL, order_id=market.exchange_order_id)
    await gw.account()


async def _rejections(_handle: SimHandle, gw: Gateway) -> None:
    await _expect(ExchangeRejectedError, gw.place_order(limit_buy("cassette-notional", price="5")))
    await _expect(
        ExchangeRejectedError, gw.place_order(limit_buy("cassette-no-funds", quantity="30"))
    )
    await _expect(ExchangeRejectedError, gw.get_order(SYMBOL, client_order_id="cassette-unknown"))
    await _expect(ExchangeRejectedError, gw.cancel_order(SYMBOL, order_id=987654321))


async def _read_503(handle: SimHandle, gw: Gateway) -> None:
    handle.faults.error_burst(1, 503)
    await _expect(ExchangeUnavailableError, gw.account())
    await gw.account()


async def _execute_then_503(handle: SimHandle, gw: Gateway) -> None:
    handle.faults.execute_then_503(1)
    await _expect(OrderOutcomeUnknownError, gw.place_order(limit_buy("cassette-exec-503")))
    await gw.get_order(SYMBOL, client_order_id="cassette-exec-503")


async def _clock_skew(handle: SimHandle, gw: Gateway) -> None:
    handle.faults.clock_skew(-7_000)  # the exchange is 7 s behind: our timestamps are ahead
    await gw.place_order(limit_buy("cassette-skewed"))
    assert gw.statistics().resyncs == 1


async def _lower_limit(handle: SimHandle) -> None:
    handle.faults.lower_limit("REQUEST_WEIGHT", "MINUTE", 1, 5)
    await trio.lowlevel.checkpoint()


async def _rate_limited(_handle: SimHandle, gw: Gateway) -> None:
    # The gateway never read the lowered limit (no prepare): it believes 1200/min.
    for _ in range(5):
        await gw.ping()
    await _expect(RateLimitedError, gw.ping())


async def _get_banned(handle: SimHandle) -> None:
    handle.faults.lower_limit("REQUEST_WEIGHT", "MINUTE", 1, 5)
    async with httpx.AsyncClient(base_url=handle.rest_url) as other:
        for _ in range(100):
            if (await other.get("/api/v3/ping")).status_code == 418:
                return
    raise RuntimeError("100 requests over the limit and still no 418")


async def _ip_banned(_handle: SimHandle, gw: Gateway) -> None:
    await _expect(IpBannedError, gw.ping())
    await _expect(IpBannedError, gw.ping())  # refused by the gateway's limiter: not sent


@attrs.frozen(kw_only=True)
class Scenario:
    """One cassette: what runs before it (not recorded) and what the gateway does in it."""

    name: str
    run: Callable[[SimHandle, Gateway], Awaitable[None]]
    prepare: bool = False
    setup: Callable[[SimHandle], Awaitable[None]] | None = None


SCENARIOS: Final = (
    Scenario(name="happy_path", run=_happy_path, prepare=True),
    Scenario(name="rejections", run=_rejections),
    Scenario(name="read_503", run=_read_503),
    Scenario(name="execute_then_503", run=_execute_then_503),
    Scenario(name="clock_skew", run=_clock_skew),
    Scenario(name="rate_limited", run=_rate_limited, setup=_lower_limit),
    Scenario(name="ip_banned", run=_ip_banned, setup=_get_banned),
)


async def record(scenario: Scenario, cassette_dir: Path) -> Path:
    """Record ``scenario`` into ``cassette_dir/<name>.yaml`` (replacing it); returns the path."""
    path = cassette_dir / f"{scenario.name}.yaml"
    await trio.Path(path).unlink(missing_ok=True)
    print(f"{scenario.name}:")
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(
            run_simulator, SimConfig(seed=SEED, epoch_ms=EPOCH_MS)
        )
        # The client's wall clock reads exactly what the simulator's reads before any skew.
        sim_clock = handle.sim.clock
        client_clock = SimClock(
            epoch_at_anchor_ms=sim_clock.epoch_at_anchor_ms, trio_anchor=sim_clock.trio_anchor
        )
        if scenario.setup is not None:
            await scenario.setup(handle)
        logger.info("record.scenario name=%s rest_url=%s", scenario.name, handle.rest_url)
        try:
            with recorder(cassette_dir).use_cassette(path.name) as cassette:
                async with open_gateway(
                    Settings(),
                    rest_url=handle.rest_url,
                    api_key=Secret(handle.api_key),
                    signer=HmacSigner(Secret(handle.api_secret)),
                    config=CONFIG,
                    wall_clock_ms=client_clock.now_ms,
                    prepare=scenario.prepare,
                ) as gw:
                    await scenario.run(handle, gw)
        except BaseException:
            # vcrpy saves what it has on the way out: never leave half a scenario behind.
            await trio.Path(path).unlink(missing_ok=True)
            raise
        nursery.cancel_scope.cancel()
    for request, response in zip(cassette.requests, cassette.responses, strict=True):
        status = response["status"]["code"]
        print(f"    {request.method:6} {request.path:24} -> {status}")
    size = (await trio.Path(path).stat()).st_size
    print(f"  {len(cassette)} interactions, {size} bytes -> {path}")
    return path


async def _record_all(names: Sequence[str], cassette_dir: Path) -> None:
    for scenario in SCENARIOS:
        if not names or scenario.name in names:
            await record(scenario, cassette_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=CASSETTE_DIR, help="cassette directory")
    parser.add_argument(
        "--only", nargs="*", default=[], choices=[s.name for s in SCENARIOS], help="scenarios"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    # Virtual time stands still (MockClock, rate 0, no autojump) while loopback I/O runs for
    # real: the market feed never ticks after its first (seeded) step, every clock reads
    # EPOCH_MS, and a re-recording gives the same cassettes.
    trio.run(_record_all, args.only, args.out, clock=trio.testing.MockClock())
    return 0


if __name__ == "__main__":
    sys.exit(main())
