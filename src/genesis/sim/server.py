"""The whole simulator, composed: exchange, market, REST + admin API, streams and WS API.

```
run_simulator                                   (one nursery; nursery.start → SimHandle)
├── market feed           feed.py     steps the market maker, publishes stream payloads
├── HTTP on rest_port     rest.py     /api/v3/*   + admin.py /sim/*   (hypercorn, trio worker)
├── WS on ws_port         streams.py  /ws, /stream  ─┐ one listener, one WebSocket handshake;
│                         ws_api.py   /ws-api/v3    ─┘ its path picks the handler (as Binance's
│                                                      hosts do)
└── [--faults PROFILE]    faults.py   seeded fault schedule
```

Everything listens on 127.0.0.1 by default. The same components run without sockets for
virtual-time tests: :func:`build_simulator` returns them, ``sim.http_app`` serves over
``httpx.ASGITransport`` and ``sim.connect_ws_memory(nursery, path)`` opens an in-memory
connection to the WebSocket side.

The default account's credentials are fixed and documented (they are not secrets: the simulator
only listens on loopback): :data:`DEFAULT_API_KEY` / :data:`DEFAULT_API_SECRET`.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import urllib.parse
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import trio
import trio.testing

from genesis.sim._wsconn import ConnLog, serve_handshake, socket_handler
from genesis.sim.admin import AdminApp
from genesis.sim.auth import ApiKey
from genesis.sim.clock import SimClock
from genesis.sim.exchange import DEFAULT_BALANCES, Exchange
from genesis.sim.faults import FAULT_PROFILES, Faults, run_fault_profile
from genesis.sim.feed import run_market_feed
from genesis.sim.hub import StreamHub
from genesis.sim.limits import StreamServerConfig
from genesis.sim.market import MarketMaker
from genesis.sim.rest import RestApp, serve_rest
from genesis.sim.streams import InboundTap, StreamServer
from genesis.sim.symbols import DEFAULT_SYMBOLS, spec_for
from genesis.sim.ws_api import WsApiConfig, WsApiContext, handle_ws_api

if TYPE_CHECKING:
    import ssl
    from collections.abc import Sequence

    import trio_websocket

    from genesis.sim.feed import MarketFeed
    from genesis.sim.rest import Receive, Scope, Send

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "SimConfig",
    "SimHandle",
    "Simulator",
    "build_simulator",
    "is_loopback",
    "run_simulator",
]

logger = logging.getLogger(__name__)

DEFAULT_API_KEY: Final = "GenesisSimDefaultApiKey00000000000000000000000000000000000000000"
DEFAULT_API_SECRET: Final = "GenesisSimDefaultSecret00000000000000000000000000000000000000000"

_WS_API_PREFIX: Final = "/ws-api/"
_LOG: Final = ConnLog(logger, "sim.ws")


def _symbols(value: object) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_SYMBOLS
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple, frozenset, set)):
        raise TypeError("symbols must be a sequence of names")
    names = tuple(dict.fromkeys(str(s).strip().upper() for s in value if str(s).strip()))
    for name in names:
        spec_for(name)  # raises ValueError on a bad name
    if not names:
        raise ValueError("at least one symbol is needed")
    return names


def _profile(_inst: object, _attr: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and value not in FAULT_PROFILES:
        raise ValueError(f"unknown fault profile {value!r}; choose from {sorted(FAULT_PROFILES)}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1 or ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _remote_needs_consent(inst: SimConfig, _attr: attrs.Attribute[str], host: str) -> None:
    if not is_loopback(host) and not inst.allow_remote:
        raise ValueError(
            f"host {host!r} is reachable from other machines, and the simulator's default "
            "credentials are published: pass allow_remote=True (--allow-remote) to bind it"
        )


def _both_or_neither(inst: SimConfig, _attr: attrs.Attribute[str | None], _v: object) -> None:
    if (inst.api_key is None) != (inst.api_secret is None):
        raise ValueError("api_key and api_secret go together")


@attrs.frozen(kw_only=True)
class SimConfig:
    """How to run the simulator.

    Attributes:
        host: interface to listen on (loopback by default). Any other address needs
            ``allow_remote``: the default credentials are published, so anyone who can reach
            the port can trade on the simulator.
        allow_remote: consent to bind a non-loopback ``host`` (logged as a WARNING).
        rest_port: REST and admin API port; 0 picks a free one.
        ws_port: streams and WS API port; 0 picks a free one.
        seed: seeds the market maker and the fault schedule.
        symbols: the symbols traded (default BTCUSDT, ETHUSDT, BNBUSDT).
        faults: a profile from :data:`~genesis.sim.faults.FAULT_PROFILES`, or None.
        api_key, api_secret: the default account's HMAC credentials (documented defaults).
        max_connection_age_s: the 24 h cap on stream and WS API connections.
        epoch_ms: start the clock at this epoch time (deterministic runs); None: real time.
        ssl_context: a server context: the streams and WS API port serves TLS (``wss://``, as
            Binance does); REST and the admin API stay plain HTTP.
    """

    host: str = attrs.field(default="127.0.0.1", validator=_remote_needs_consent)
    allow_remote: bool = False
    rest_port: int = 0
    ws_port: int = 0
    seed: int = 1
    symbols: tuple[str, ...] = attrs.field(default=DEFAULT_SYMBOLS, converter=_symbols)
    faults: str | None = attrs.field(default=None, validator=_profile)
    api_key: str | None = attrs.field(default=None, validator=_both_or_neither)
    api_secret: str | None = attrs.field(default=None, repr=False)
    max_connection_age_s: float = 24 * 3600.0
    epoch_ms: int | None = None
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, eq=False, repr=False)


@attrs.define(eq=False)
class Simulator:
    """The simulator's components, wired together but not yet serving anything."""

    config: SimConfig
    clock: SimClock
    exchange: Exchange
    market_maker: MarketMaker
    hub: StreamHub
    rest: RestApp
    admin: AdminApp
    streams: StreamServer
    ws_api: WsApiContext
    faults: Faults
    api_key: str
    api_secret: str = attrs.field(repr=False)

    async def http_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI: ``/sim/*`` to the admin API, everything else to the Binance REST API."""
        path = scope.get("path")
        if scope.get("type") == "http" and isinstance(path, str) and path.startswith("/sim/"):
            await self.admin(scope, receive, send)
        else:
            await self.rest(scope, receive, send)

    async def handle_ws_stream(self, stream: trio.abc.Stream, *, remote_ip: str) -> None:
        """Serve one WebSocket client on ``stream``; always closes it.

        One WebSocket handshake (trio-websocket reads the upgrade request, within the stream
        server's ``handshake_timeout_s``; both servers use the same handshake limits), then its
        path picks the handler: ``/ws-api/...`` the WS API, anything else the market streams
        (which answer 404 for a path they do not serve). The transport is wrapped in the
        streams' :class:`~genesis.sim.streams.InboundTap` either way, so a protocol violation
        gets its 1002/1007 close frame on both.
        """
        tap = InboundTap(stream)
        try:
            await serve_handshake(
                tap,
                self.streams.config,
                remote_ip=remote_ip,
                log=_LOG,
                serve=functools.partial(self._dispatch, tap=tap, remote_ip=remote_ip),
            )
        finally:
            await trio.aclose_forcefully(stream)

    async def _dispatch(
        self, request: trio_websocket.WebSocketRequest, *, tap: InboundTap, remote_ip: str
    ) -> None:
        if urllib.parse.urlsplit(request.path).path.startswith(_WS_API_PREFIX):
            await handle_ws_api(request, self.ws_api, remote_ip=remote_ip)
        else:
            await self.streams.serve_request(request, tap=tap, remote_ip=remote_ip)

    def connect_ws_memory(
        self, nursery: trio.Nursery, *, remote_ip: str = "127.0.0.1"
    ) -> trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]:
        """An in-memory client connection to the WebSocket side (virtual-time tests)."""
        client, server_side = trio.testing.memory_stream_pair()
        nursery.start_soon(
            functools.partial(self.handle_ws_stream, server_side, remote_ip=remote_ip)
        )
        return client


@attrs.frozen(kw_only=True)
class SimHandle:
    """A running simulator: its base URLs and its components (for tests and the admin API)."""

    rest_url: str
    stream_url: str
    ws_api_url: str
    rest_port: int
    ws_port: int
    sim: Simulator
    feed: MarketFeed

    @property
    def faults(self) -> Faults:
        return self.sim.faults

    @property
    def api_key(self) -> str:
        return self.sim.api_key

    @property
    def api_secret(self) -> str:
        return self.sim.api_secret


def build_simulator(config: SimConfig, *, clock: SimClock | None = None) -> Simulator:
    """Wire the components for ``config``. Call inside ``trio.run`` (the clock reads Trio time)."""
    clock = clock if clock is not None else SimClock.start(config.epoch_ms)
    exchange = Exchange([spec_for(s) for s in config.symbols], seed=config.seed)
    market_maker = MarketMaker(exchange, seed=config.seed)
    hub = StreamHub()
    rest = RestApp(exchange, clock=clock)
    api_key = config.api_key or DEFAULT_API_KEY
    api_secret = config.api_secret or DEFAULT_API_SECRET
    rest.add_api_key(ApiKey.hmac(api_key, api_secret), dict(DEFAULT_BALANCES))
    streams = StreamServer(
        hub,
        clock,
        StreamServerConfig(
            symbols=frozenset(config.symbols), max_age_s=config.max_connection_age_s
        ),
    )
    ws_api = WsApiContext(
        exchange=exchange,
        clock=clock,
        keys=rest.keys,
        limiter=rest.limiter,
        config=WsApiConfig(max_age_s=config.max_connection_age_s),
    )
    faults = Faults(
        streams=streams.faults,
        ws_api=ws_api,
        rest=rest.faults,
        limiter=rest.limiter,
        clock=clock,
        exchange=exchange,
    )
    rest.faults.reseed(config.seed)
    admin = AdminApp(faults=faults, status=lambda: _status(streams, ws_api, rest, hub))
    return Simulator(
        config=config,
        clock=clock,
        exchange=exchange,
        market_maker=market_maker,
        hub=hub,
        rest=rest,
        admin=admin,
        streams=streams,
        ws_api=ws_api,
        faults=faults,
        api_key=api_key,
        api_secret=api_secret,
    )


def _status(
    streams: StreamServer, ws_api: WsApiContext, rest: RestApp, hub: StreamHub
) -> dict[str, object]:
    return {
        "streams": attrs.asdict(streams.statistics()),
        "stream_connections": [
            {
                "id": c.id,
                "path": c.path,
                "remote": c.remote,
                "streams": sorted(c.streams),
                "connected_at_ms": c.connected_at_ms,
                "frames_sent": c.frames_sent,
            }
            for c in streams.connections()
        ],
        "ws_api": attrs.asdict(ws_api.statistics()),
        "rest": attrs.asdict(rest.statistics()),
        "hub": attrs.asdict(hub.statistics()),
    }


async def run_simulator(
    config: SimConfig,
    *,
    task_status: trio.TaskStatus[SimHandle] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the simulator until cancelled.

    ``handle = await nursery.start(run_simulator, config)`` returns once the market is seeded and
    both ports listen. Cancelling it closes every connection at once.

    Raises:
        OSError: a port could not be bound.
    """
    sim = build_simulator(config)
    if not is_loopback(config.host):
        logger.warning(
            "sim.remote_bind host=%s: the simulator listens beyond this machine with "
            "published default credentials; anyone who can reach it can trade on it",
            config.host,
        )
    async with trio.open_nursery() as nursery:
        feed: MarketFeed = await nursery.start(
            run_market_feed, sim.exchange, sim.market_maker, sim.hub, sim.clock
        )
        # The WS port first: trio closes its sockets when a bind fails (hypercorn leaks them).
        listeners = await trio.open_tcp_listeners(config.ws_port, host=config.host)
        ws_port = int(listeners[0].socket.getsockname()[1])
        sim.streams.port = ws_port
        served: Sequence[trio.abc.Listener[trio.abc.Stream]] = listeners
        if config.ssl_context is not None:
            served = [trio.SSLListener(listener, config.ssl_context) for listener in listeners]
        await nursery.start(trio.serve_listeners, socket_handler(sim.handle_ws_stream), served)
        rest_port: int = await nursery.start(
            functools.partial(serve_rest, sim.http_app, host=config.host, port=config.rest_port)
        )
        if config.faults is not None:
            await nursery.start(
                functools.partial(
                    run_fault_profile, sim.faults, FAULT_PROFILES[config.faults], seed=config.seed
                )
            )
        host = config.host
        ws = "ws" if config.ssl_context is None else "wss"
        handle_ = SimHandle(
            rest_url=f"http://{host}:{rest_port}",
            stream_url=f"{ws}://{host}:{ws_port}",
            ws_api_url=f"{ws}://{host}:{ws_port}/ws-api/v3",
            rest_port=rest_port,
            ws_port=ws_port,
            sim=sim,
            feed=feed,
        )
        logger.info(
            "sim.listening rest=%s streams=%s symbols=%s seed=%d faults=%s",
            handle_.rest_url,
            handle_.stream_url,
            ",".join(config.symbols),
            config.seed,
            config.faults or "none",
        )
        task_status.started(handle_)
        await trio.sleep_forever()
