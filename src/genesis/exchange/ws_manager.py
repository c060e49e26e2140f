"""Redundant market-data connections, the merger that dedups them, and their health.

:func:`run_market_data` keeps three (by default) combined-stream connections to the same URL,
one task per *role* (``execution``, ``monitoring``, ``backup``), and one merger loop::

    connection task ──┐  every frame of one read   ┌── Merger (exchange/merger.py, pure):
    connection task ──┼───── + receive time ──────►┤   key from the raw text, copies dropped,
    connection task ──┘   (a synchronous call)     └── decode once ──► bus.publish_nowait
                                                          │ holes ▲
                             merger loop: hold deadlines, backfill tasks (exchange/backfill.py)

Each connection task reads its socket (the default transport, :mod:`.ws_transport`, in 64 KiB
reads, answering pings itself before it hands the frames on) and feeds a read's frames to the
merger core in one synchronous call: no channel and no task hop per frame. The core never
blocks (the bus's ``publish_nowait`` drops or conflates by kind, counted), so a connection task
never waits for a subscriber and its pongs never wait for a consumer (ARCHITECTURE.md §7).
The merger reads each copy's key from the raw text (models/codec), drops the copies the other
connections already delivered unparsed, and decodes only the first copy. The merger loop is
woken only when a hold deadline or a backfill request appeared, never per frame.

Per connection (role):

- connect with a ``connect_timeout_s`` cancel scope; foreign errors are translated here, once,
  into :class:`~genesis.errors.ConnectError`, :class:`~genesis.errors.ConnectionLostError` and
  :class:`~genesis.errors.ReadTimeoutError`;
- a handshake answered 4xx (an invalid stream, an unknown symbol) is not a network failure:
  :class:`~genesis.errors.StreamRejectedError`, logged at ERROR with the server's reason, and
  once every role has been rejected ``max_rejected_handshakes`` times in a row the feed ends
  with that error (the run stops with a clear message instead of retrying forever). HTTP 429
  (too many connection attempts) and 418 are rate limits: WARNING, and the next wait is the
  backoff's cap;
- every attempt first takes a token from the shared ``attempt_limiter`` (Binance: 300
  connection attempts per 5 minutes per IP, :mod:`genesis.resilience.connect_limiter`);
- liveness per stream kind: no frame at all for ``stale_after_s`` (a stalled feed, even while
  pings flow) → reconnect; no depth20 frame for ``depth_stale_after_s`` (depth20@100ms is a
  snapshot every 100 ms; a quiet trade stream is normal) → the role is *stale*: not live, a
  WARNING, live again with the next depth frame;
- when no role is live, :class:`~genesis.models.events.FeedDown` goes on the bus at once, and
  :class:`~genesis.models.events.FeedUp` when one is live again (also the first time);
- when every connection was down, the first one up makes the merger catch up
  (:meth:`~genesis.exchange.merger.Merger.on_feed_restored`): it asks REST for the trades
  since each stream's newest id, as a quiet market may print nothing that would reveal what
  the outage cost;
- :meth:`MarketDataHandle.probe_connections` (the heartbeat's, every 30 s) pings every
  connection and records the round trip; no pong within ``ping_timeout_s`` ends the connection;
- reconnect after a failure with exponential backoff (1, 2, 4 … 30 s with full jitter, so
  roles failing together do not retry in the same instant; :mod:`genesis.resilience.backoff`),
  reset once a connection delivered frames for ``backoff.reset_after_s`` (10 s); never giving
  up;
- with a ``breaker`` (the market-streams
  :class:`~genesis.resilience.circuit_breaker.CircuitBreaker`, shared by every role), each
  connect attempt runs inside its ``guard()``: a connect error or timeout counts as a failure,
  an opened connection as a success, and while it is open an attempt is refused without
  dialling and ends like any failed connect (logged, counted, backoff);
- rotate make-before-break at ``rotate_after_s`` (23 h 30 min, before Binance's 24 h cut) and on
  a ``serverShutdown`` notice: open the successor at once, keep the old connection relaying,
  close it only ``rotation_overlap_s`` after the successor delivered its first frame. The
  merger absorbs the overlap.

The configuration and statistics types live in :mod:`genesis.exchange.ws_config`.

Merger rules: see :mod:`genesis.exchange.merger` (exactly once and in order per stream; trade
holes held, then backfilled from REST when a ``backfill`` source is given, else published as
``FeedGap``; sequence resets; hostile input counted by kind). This module feeds it the frames
with the time, wakes it at its hold deadlines and runs its backfill requests as tasks.

Logs use stable names: ``ws.connect``, ``ws.connected``, ``ws.connect_failed`` (WARNING),
``ws.rejected`` (ERROR), ``ws.disconnect`` (WARNING unless rotated or cancelled),
``ws.reconnect``, ``ws.rotate``, ``ws.stale`` (WARNING), ``ws.live``, ``ws.ping_timeout``
(WARNING), ``ws.feed_down`` (WARNING), ``ws.feed_up`` (the merger's ``ws.merger.*``); each
connection line names the role, each end line its reason.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Final, NoReturn, TypeAlias

import attrs
import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

from genesis.errors import (
    CircuitOpenError,
    ConnectError,
    ConnectionLostError,
    ExchangeError,
    IpBannedError,
    RateLimitedError,
    ReadTimeoutError,
    StreamRejectedError,
)
from genesis.exchange.merger import Merger, MergerConfig, MergerStatistics
from genesis.exchange.merger_loop import MergerLoop
from genesis.exchange.streams import (
    StreamKind,
    combined_stream_url,
    is_server_shutdown,
    market_streams,
    route_for,
)
from genesis.exchange.ws_config import MARKET_DATA_BACKOFF, MarketDataConfig, MarketDataStatistics
from genesis.exchange.ws_connect import (
    BatchWebSocket,
    WebSocket,
    WebSocketConnector,
    connect_tcp_websocket,
    dial_guarded,
    limited_connector,
    one_message,
)
from genesis.exchange.ws_errors import (
    close_text,
    describe_error,
    first_leaf,
    translate_connect_error,
    translate_rejection,
)
from genesis.exchange.ws_reader import ReadGroup
from genesis.exchange.ws_reader import supported as read_group_supported
from genesis.exchange.ws_role import RateMeter, RoleState, Session
from genesis.exchange.ws_transport import FastWebSocket, connect_fast_websocket
from genesis.models.codec import is_depth_frame
from genesis.models.events import ConnectionHealth, ConnectionState, FeedDown, FeedUp
from genesis.resilience.backoff import Backoff

if TYPE_CHECKING:
    from genesis.bus import EventBus
    from genesis.exchange.backfill import BackfillSource
    from genesis.resilience.circuit_breaker import CircuitBreaker
    from genesis.resilience.connect_limiter import ConnectAttemptLimiter

__all__ = [
    "CLOSE_ON_CANCEL_S",
    "DEFAULT_ROLES",
    "MARKET_DATA_BACKOFF",
    "BatchWebSocket",
    "ConnectionHealth",
    "ConnectionState",
    "MarketDataConfig",
    "MarketDataHandle",
    "MarketDataStatistics",
    "MergerConfig",
    "MergerStatistics",
    "WallClock",
    "WebSocket",
    "WebSocketConnector",
    "connect_tcp_websocket",
    "limited_connector",
    "run_market_data",
    "system_wall_clock_ms",
]

logger = logging.getLogger(__name__)

DEFAULT_ROLES: Final = ("execution", "monitoring", "backup")

WallClock: TypeAlias = Callable[[], int]
"""Epoch milliseconds now; injected so latency is exact in tests (monotonic time is Trio's)."""


CLOSE_ON_CANCEL_S: Final = 0.1
"""How long a cancelled connection task gives its close frame to leave before closing TCP."""


def system_wall_clock_ms() -> int:
    """The system wall clock in epoch milliseconds (``time.time``)."""
    return int(time.time() * 1000)


@attrs.define
class _Marks:
    """When one connection last delivered a frame, and a depth20 frame (Trio time)."""

    frame_at: float
    depth_at: float


@attrs.define(eq=False)
class _Service:
    """Everything one :func:`run_market_data` call owns."""

    url: str
    bus: EventBus
    config: MarketDataConfig
    roles: tuple[RoleState, ...]
    connector: WebSocketConnector
    wall_clock_ms: WallClock
    merger: MergerLoop
    breaker: CircuitBreaker | None = None
    attempt_limiter: ConnectAttemptLimiter | None = None
    watch_depth: bool = True
    read_group: ReadGroup | None = None
    """Reads every socket connection in one task (``None``: each reads its own)."""
    last_rejection: StreamRejectedError | None = None
    rejected_everywhere: bool = False
    state_changed: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    session_ids: itertools.count[int] = attrs.field(factory=itertools.count)
    all_disconnected: bool = False
    """The last connected session ended (none is connected, and one was): trades printed
    since reached nobody, and the next connection asks REST for them."""

    def notify_state(self) -> None:
        self.state_changed.unpark_all()

    # -- the whole feed -------------------------------------------------------------------------

    def last_frame_at(self) -> float | None:
        times = [r.last_frame_at for r in self.roles if r.last_frame_at is not None]
        return max(times, default=None)

    async def watch_feed(self) -> NoReturn:
        """Publish ``FeedDown`` the moment no role is live, ``FeedUp`` when one is again."""
        live: bool | None = None  # unknown until the first role is live
        down_at: float | None = None
        while True:
            now = trio.current_time()
            live_roles = [r for r in self.roles if r.live]
            if live_roles and live is not True:
                down_for = 0.0 if down_at is None else now - down_at
                live, down_at = True, None
                logger.info("ws.feed_up role=%s down_for_s=%.1f", live_roles[0].name, down_for)
                await self.bus.publish(FeedUp(at=now, down_for_s=down_for, role=live_roles[0].name))
                continue
            if not live_roles and live is True:
                live, down_at = False, now
                reason = self._down_reason()
                last = self.last_frame_at()
                age = None if last is None else now - last
                logger.warning(
                    "ws.feed_down reason=%s last_frame_age_s=%s",
                    reason,
                    "-" if age is None else f"{age:.1f}",
                )
                await self.bus.publish(FeedDown(at=now, reason=reason, last_event_age_s=age))
                continue
            await self.state_changed.park()

    def _any_connected(self) -> bool:
        return any(
            session is not None and session.connected_at is not None and not session.ended
            for role in self.roles
            for session in (role.current, role.previous)
        )

    def _down_reason(self) -> str:
        for role in self.roles:
            if role.receiving:  # connected and delivering, yet not live: stale
                return f"no depth20 frame for {self.config.depth_stale_after_s:g} s"
        errors = [r.last_error for r in self.roles if r.last_error]
        return errors[0] if errors else "no connection"

    # -- one role -------------------------------------------------------------------------------

    async def run_role(self, role: RoleState) -> NoReturn:
        """Keep one connection of ``role`` alive: reconnect with backoff, rotate on request."""
        async with trio.open_nursery() as nursery:
            while True:
                session = Session(id=next(self.session_ids))
                role.current = session
                role.state = ConnectionState.CONNECTING
                self.notify_state()
                nursery.start_soon(self.run_session, role, session)
                await session.signal.wait()
                if session.handover_reason is not None:
                    role.previous = session
                    role.rotations += 1
                    logger.info("ws.rotate role=%s reason=%s", role.name, session.handover_reason)
                    continue
                self._check_rejections()
                delay = role.backoff.mark_failed(
                    trio.current_time(), healthy_until=session.last_frame_at
                )
                if session.rate_limited:
                    # Too many connection attempts from this IP: wait the longest we ever do.
                    delay = max(delay, role.backoff.policy.max_s)
                role.reconnects += 1
                role.state = ConnectionState.BACKOFF
                self.notify_state()
                logger.info(
                    "ws.reconnect role=%s attempt=%d delay_s=%.1f reason=%s",
                    role.name,
                    role.backoff.attempt,
                    delay,
                    role.last_error,
                )
                await trio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _failed(self, role: RoleState, session: Session, exc: BaseException) -> str:
        """Account for what ended a session (a rejection, a rate limit); its description."""
        if isinstance(exc, StreamRejectedError):
            role.rejections += 1
            self.last_rejection = exc
            logger.error(
                "ws.rejected role=%s session=%d status=%d consecutive=%d reason=%s",
                role.name,
                session.id,
                exc.status_code,
                role.rejections,
                exc.reason,
            )
        elif isinstance(exc, RateLimitedError | IpBannedError):
            session.rate_limited = True
        return describe_error(exc)

    def _check_rejections(self) -> None:
        limit = self.config.max_rejected_handshakes
        if all(r.rejections >= limit for r in self.roles):
            last = self.last_rejection
            assert last is not None
            if self.rejected_everywhere:  # another role got here first: one line is enough
                raise StreamRejectedError(last.status_code, last.reason)
            self.rejected_everywhere = True
            reasons = sorted({r.last_error or "" for r in self.roles})
            logger.error(
                "ws.rejected_everywhere attempts=%d roles=%d reason=%s",
                limit,
                len(self.roles),
                "; ".join(reasons),
            )
            raise StreamRejectedError(
                last.status_code,
                f"{last.reason} (every connection, {limit} times in a row)",
            )

    async def run_session(self, role: RoleState, session: Session) -> None:
        """One connection: connect, relay, end. Transport failures end it; bugs propagate."""
        error: str | None = None
        try:
            await self._connect_and_relay(role, session)
        except* (ExchangeError, CircuitOpenError) as group:
            # CircuitOpenError: the breaker refused the attempt (nothing was dialled); it ends
            # this session as a failed connect, so the role backs off as after any other.
            error = self._failed(role, session, first_leaf(group))
        except* (trio_websocket.HandshakeError, OSError) as group:
            # Raised by trio-websocket's reader task (a rejected handshake), not by our code.
            leaf = first_leaf(group)
            if isinstance(leaf, trio_websocket.ConnectionRejected):
                error = self._failed(role, session, translate_rejection(leaf))
            else:
                error = describe_error(translate_connect_error(leaf))
        except* LocalProtocolError as group:
            # trio-websocket#184: a server ping that crosses our close frame (rotation, stale
            # feed) makes trio-websocket's reader task answer with a pong that wsproto refuses
            # in state LOCAL_CLOSING, and the error escapes the reader. The connection is over
            # either way: it is lost, never a crash of the whole feed.
            error = describe_error(ConnectionLostError(f"closing: {first_leaf(group)}"))
        finally:
            session.ended = True
            session.ws = None
            if role.previous is session:
                role.previous = None
            if session.connected_at is not None and not self._any_connected():
                self.all_disconnected = True
            reason = error or ("rotated" if session.retired else "cancelled")
            if role.current is session and error is not None:
                role.last_error = error
                if not error.startswith(CircuitOpenError.__name__):
                    role.last_cause = error
            # A person must act on a feed that fails; rotations and our own stop are routine.
            level = logging.WARNING if error is not None else logging.INFO
            if session.connected_at is None:
                logger.log(
                    level,
                    "ws.connect_failed role=%s session=%d reason=%s",
                    role.name,
                    session.id,
                    reason,
                )
            else:
                logger.log(
                    level,
                    "ws.disconnect role=%s session=%d reason=%s",
                    role.name,
                    session.id,
                    reason,
                )
            session.signal.set()
            self.notify_state()

    async def _connect_and_relay(self, role: RoleState, session: Session) -> None:
        if self.attempt_limiter is not None:
            await self.attempt_limiter.acquire(role.name)
        logger.info("ws.connect role=%s session=%d", role.name, session.id)
        async with trio.open_nursery() as nursery:
            ws = await dial_guarded(
                self.breaker, partial(self._dial, nursery, role.name), self._close
            )
            session.connected_at = trio.current_time()
            session.ws = ws
            if self.all_disconnected:
                # Every connection was down: what was printed meanwhile reached none of them,
                # and a quiet market may print nothing that would reveal the hole.
                self.merger.feed_restored(session.connected_at)
                self.all_disconnected = False
            role.rejections = 0
            if role.current is session:
                role.state = ConnectionState.CONNECTED
            self.notify_state()
            logger.info("ws.connected role=%s session=%d", role.name, session.id)
            try:
                with trio.CancelScope() as relay_scope:
                    session.relay_scope = relay_scope
                    nursery.start_soon(self._retire_when_replaced, role, session, relay_scope)
                    await self._relay(ws, role, session)
            finally:
                session.ws = None
                await self._close(ws)
                nursery.cancel_scope.cancel()
            if session.failure is not None:
                raise ReadTimeoutError(session.failure)

    async def _dial(self, nursery: trio.Nursery, role: str) -> WebSocket:
        """One connect attempt within ``connect_timeout_s``; errors translated to ConnectError."""
        with trio.move_on_after(self.config.connect_timeout_s) as connect_scope:
            try:
                return await self.connector(
                    nursery, self.url, message_queue_size=self.config.message_queue_size, role=role
                )
            except trio_websocket.ConnectionRejected as exc:
                raise translate_rejection(exc) from exc
            except (
                trio_websocket.HandshakeError,
                trio_websocket.ConnectionClosed,
                OSError,
            ) as exc:
                raise translate_connect_error(exc) from exc
        assert connect_scope.cancelled_caught
        raise ConnectError(f"connect timed out after {self.config.connect_timeout_s:g} s")

    async def _close(self, ws: WebSocket) -> None:
        if trio.current_effective_deadline() == -math.inf:
            # The service itself is being cancelled, trio-websocket's reader task included, so
            # the peer's answer to our close frame could never be read. Send the close frame
            # (the server then logs an orderly 1000, not a reset) but wait only
            # CLOSE_ON_CANCEL_S for it to leave, then close the transport.
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_ON_CANCEL_S):
                await ws.aclose()
            return
        with trio.CancelScope(shield=True), trio.move_on_after(self.config.disconnect_timeout_s):
            await ws.aclose()

    async def _retire_when_replaced(
        self, role: RoleState, session: Session, relay_scope: trio.CancelScope
    ) -> None:
        while role.newest_receiving <= session.id:
            await self.state_changed.park()
        await trio.sleep(self.config.rotation_overlap_s)
        session.retired = True
        relay_scope.cancel()

    async def _relay(self, ws: WebSocket, role: RoleState, session: Session) -> None:
        """Timestamp and forward every frame; detect stale feeds, age and serverShutdown.

        A connection of the default transport over a socket (``ws://`` or ``wss://``) is read
        by the service's :class:`~.ws_reader.ReadGroup` (one task and one wake-up for every
        connection's frames); this task then only keeps the deadlines and sees the end of the
        connection. Any other connection (trio-websocket, in memory) is read here.
        """
        config = self.config
        assert session.connected_at is not None
        rotate_at = session.connected_at + config.rotate_after_s
        marks = _Marks(session.connected_at, session.connected_at)

        def take(messages: Sequence[str | bytes], now: float) -> None:
            self._take(role, session, marks, messages, now)

        attached: tuple[ReadGroup, FastWebSocket] | None = None
        group = self.read_group
        if group is not None and isinstance(ws, FastWebSocket) and group.attach(ws, take):
            attached = group, ws
        # A batching transport (ws_transport) hands over every frame of one read at once.
        receive = ws.get_messages if isinstance(ws, BatchWebSocket) else one_message(ws)
        try:
            while True:
                # One cancel scope per deadline, not per read (a scope per read cost ≈ 20 µs per
                # event): frames arriving inside it only move the marks on, so when it fires
                # the loop re-checks them and re-arms; the detection instants are the same.
                stale_at = marks.frame_at + config.stale_after_s
                deadline = stale_at if session.handover_reason else min(stale_at, rotate_at)
                if self.watch_depth and not session.stale:
                    deadline = min(deadline, marks.depth_at + config.depth_stale_after_s)
                with trio.move_on_at(deadline):
                    try:
                        if attached is not None:
                            await attached[1].wait_closed()
                        while True:
                            messages = await receive()
                            take(messages, trio.current_time())
                    except trio_websocket.ConnectionClosed as exc:
                        if exc.reason is not None:
                            self.merger.core.on_close(exc.reason.code, trio.current_time())
                        raise ConnectionLostError(close_text(exc)) from exc
                # The deadline passed: which one, now that frames may have moved them on?
                now = trio.current_time()
                if now >= marks.frame_at + config.stale_after_s:
                    raise ReadTimeoutError(f"no frame for {config.stale_after_s:g} s")
                if (
                    self.watch_depth
                    and not session.stale
                    and now >= marks.depth_at + config.depth_stale_after_s
                ):
                    self._mark_stale(role, session, now - marks.depth_at)
                elif not session.handover_reason and now >= rotate_at:
                    self._request_handover(role, session, "age")
        finally:
            if attached is not None:
                attached[0].detach(attached[1])

    def _take(
        self,
        role: RoleState,
        session: Session,
        marks: _Marks,
        messages: Sequence[str | bytes],
        now: float,
    ) -> None:
        """One read's frames: liveness marks, serverShutdown, then the merger (synchronous)."""
        marks.frame_at = now
        session.last_frame_at = role.last_frame_at = now
        if any(is_server_shutdown(message) for message in messages):
            self._request_handover(role, session, "serverShutdown")
            messages = [m for m in messages if not is_server_shutdown(m)]
            if not messages:
                return
        if self.watch_depth and any(is_depth_frame(message) for message in messages):
            marks.depth_at = now
            if session.stale:
                session.stale = False
                logger.info("ws.live role=%s session=%d", role.name, session.id)
                self.notify_state()
        if not session.receiving:
            session.receiving = True
            session.first_frame_at = now
            role.backoff.mark_healthy(now)
            if session.id > role.newest_receiving:
                role.newest_receiving = session.id
            self.notify_state()
        role.messages += len(messages)
        role.rate.add(now, len(messages))
        self.merger.feed(role, messages, self.wall_clock_ms(), now)

    def _mark_stale(self, role: RoleState, session: Session, silent_s: float) -> None:
        session.stale = True
        logger.warning(
            "ws.stale role=%s session=%d reason=no depth20 frame for %.1f s",
            role.name,
            session.id,
            silent_s,
        )
        self.notify_state()

    def _request_handover(self, role: RoleState, session: Session, reason: str) -> None:
        if session.handover_reason is None and not session.ended:
            session.handover_reason = reason
            session.signal.set()

    # -- active probes ----------------------------------------------------------------------------

    async def probe(self, role: RoleState, session: Session, ws: WebSocket) -> None:
        """Ping one connection; record the round trip, or end the connection without a pong."""
        started = trio.current_time()
        with trio.move_on_after(self.config.ping_timeout_s) as scope:
            try:
                await ws.ping()
            except (trio_websocket.ConnectionClosed, LocalProtocolError, ValueError):
                # Closed under the probe (the relay reports why), or a ping still in flight.
                return
        if scope.cancelled_caught:
            role.ping_timeouts += 1
            role.ping_rtt_ms = None
            logger.warning(
                "ws.ping_timeout role=%s session=%d timeout_s=%g",
                role.name,
                session.id,
                self.config.ping_timeout_s,
            )
            session.fail(f"no pong within {self.config.ping_timeout_s:g} s")
            return
        role.ping_rtt_ms = (trio.current_time() - started) * 1000.0


class MarketDataHandle:
    """What :func:`run_market_data` hands to ``nursery.start``: statistics and waits.

    The handle is read-only; cancelling the service's task (or its nursery) stops everything.
    """

    def __init__(self, service: _Service, streams: tuple[str, ...]) -> None:
        self._service = service
        self.url: str = service.url
        """The combined-stream URL every connection uses."""
        self.streams: tuple[str, ...] = streams
        """The stream names subscribed on every connection."""

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(role.name for role in self._service.roles)

    def _role(self, name: str) -> RoleState:
        for role in self._service.roles:
            if role.name == name:
                return role
        raise KeyError(name)

    def health(self, role: str) -> ConnectionHealth:
        """A snapshot of one role's connection.

        Raises:
            KeyError: no such role.
        """
        return self._role(role).health(trio.current_time(), self._service.merger.published)

    def statistics(self) -> MarketDataStatistics:
        """Health of every connection and the merger counters."""
        now = trio.current_time()
        published = self._service.merger.published
        return MarketDataStatistics(
            connections=tuple(role.health(now, published) for role in self._service.roles),
            merger=self._service.merger.statistics(),
            reader=None if (group := self._service.read_group) is None else group.statistics(),
        )

    @property
    def live(self) -> bool:
        """Whether at least one connection is live (connected, delivering, depth20 fresh)."""
        return any(role.live for role in self._service.roles)

    def last_cause(self) -> str | None:
        """Why connections end or fail to open: the last error of the first role that has one,
        past the breaker (while it is open every attempt reads "circuit open"; the cause is
        what opened it)."""
        causes = [role.last_cause for role in self._service.roles if role.last_cause]
        return causes[0] if causes else None

    async def probe_connections(self) -> None:
        """Ping every connected connection at once and record each round trip.

        Returns once every pong arrived or ``ping_timeout_s`` passed; a connection without a
        pong by then is ended (its role reconnects). Cancelling it abandons the probes.
        """
        service = self._service
        async with trio.open_nursery() as nursery:
            for role in service.roles:
                session = role.current
                if session is not None and session.ws is not None and not session.ended:
                    nursery.start_soon(service.probe, role, session, session.ws)

    async def _wait_state(self, predicate: Callable[[], bool]) -> None:
        await trio.lowlevel.checkpoint()
        while not predicate():
            await self._service.state_changed.park()

    async def wait_receiving(self, role: str | None = None) -> None:
        """Wait until ``role`` (any role when ``None``) is connected and has delivered a frame."""
        if role is None:
            roles = self._service.roles
            await self._wait_state(lambda: any(r.receiving for r in roles))
        else:
            target = self._role(role)
            await self._wait_state(lambda: target.receiving)

    async def wait_all_receiving(self) -> None:
        """Wait until every role is connected and has delivered a frame."""
        roles = self._service.roles
        await self._wait_state(lambda: all(r.receiving for r in roles))

    async def wait_state(self, role: str, state: ConnectionState) -> None:
        """Wait until ``role`` is in ``state``."""
        target = self._role(role)
        await self._wait_state(lambda: target.state is state)

    async def wait_reconnects(self, role: str, count: int) -> None:
        """Wait until ``role`` has reconnected after failures at least ``count`` times."""
        target = self._role(role)
        await self._wait_state(lambda: target.reconnects >= count)

    async def wait_rotations(self, role: str, count: int) -> None:
        """Wait until ``role`` has rotated (make-before-break) at least ``count`` times."""
        target = self._role(role)
        await self._wait_state(lambda: target.rotations >= count)

    async def wait_published(self, count: int) -> None:
        """Wait until the merger has published at least ``count`` unique events."""
        await trio.lowlevel.checkpoint()
        merger = self._service.merger
        while merger.published < count:
            await merger.published_changed.park()


async def run_market_data(
    stream_base_url: str,
    symbols: Sequence[str],
    bus: EventBus,
    *,
    config: MarketDataConfig | None = None,
    roles: Sequence[str] = DEFAULT_ROLES,
    connector: WebSocketConnector = connect_fast_websocket,
    wall_clock_ms: WallClock = system_wall_clock_ms,
    rng: random.Random | None = None,
    breaker: CircuitBreaker | None = None,
    backfill: BackfillSource | None = None,
    merger_config: MergerConfig | None = None,
    attempt_limiter: ConnectAttemptLimiter | None = None,
    observe: Callable[[MarketDataHandle], object] | None = None,
    task_status: trio.TaskStatus[MarketDataHandle] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Keep redundant market-data connections and publish each event once to ``bus``.

    Every role opens ``<stream_base_url>/stream?streams=...`` with ``@trade``, ``@ticker``,
    ``@depth20@100ms`` and ``@kline_1m`` for every symbol; the merger publishes Trade, Ticker,
    Depth and Kline events with ``bus.publish_nowait``. ``FeedUp`` / ``FeedDown`` are published
    (awaited, never dropped) as the first connection becomes live and when none is.

    Args:
        stream_base_url: ``wss://stream.binance.com:9443``, or the simulator's ``ws://...``.
        symbols: Symbols in any case, e.g. ``["BTCUSDT", "ETHUSDT"]``.
        bus: Where events go; market-data types should have a droppable policy (the default
            :data:`genesis.bus.MARKET_DATA_POLICIES`).
        config: Deadlines, sizes and the backoff schedule.
        roles: One redundant connection per role name.
        connector: Opens a WebSocket (seam for in-memory tests). The default,
            :func:`~genesis.exchange.ws_transport.connect_fast_websocket`, reads each
            connection in its own task in 64 KiB reads and hands every frame of a read over at
            once; :func:`connect_tcp_websocket` (trio-websocket) remains available.
        wall_clock_ms: Epoch-ms clock for receive timestamps and latency.
        rng: Source of backoff jitter (tests inject a seeded one); ``None``: a fresh
            ``random.Random()`` when ``config.backoff.jitter`` is set.
        breaker: The market-streams circuit breaker; every connect attempt of every role runs
            inside its ``guard()``. While it is open, attempts are refused without dialling and
            back off like failed connects. ``None``: no breaker.
        backfill: Where the merger fetches trades and closed klines that no connection
            delivered (every connection was down): the REST gateway. ``None``: such holes
            are published as :class:`~genesis.models.events.FeedGap` at once.
        merger_config: The merger's hold times and bounds; by default built from ``config``
            (``gap_hold_s``, ``max_held_trades``, ``backfill_timeout_s``).
        attempt_limiter: The process's shared connection-attempt budget (Binance: 300 per 5
            minutes per IP); every attempt of every role takes a token first. ``None``: none.
        observe: Called with the handle as soon as it exists, before any connection: for a
            caller that must say why a feed never started.
        task_status: Receives the :class:`MarketDataHandle` once at least one connection is
            connected *and* receiving.

    Raises:
        ValueError: no symbols or roles, duplicate roles, too many streams.
        StreamRejectedError: every role's handshake was answered 4xx
            ``config.max_rejected_handshakes`` times in a row (an unknown symbol, a wrong URL).

    Runs until cancelled; connections close gracefully (bounded by ``disconnect_timeout_s``)
    on the way out. Transport failures never escape: they are retried forever.
    """
    config = MarketDataConfig() if config is None else config
    if not roles or len(set(roles)) != len(roles):
        raise ValueError(f"roles must be non-empty and unique: {roles!r}")
    if config.backoff.jitter and rng is None:
        rng = random.Random()  # jitter, not cryptography: unseeded is right
    streams = market_streams(symbols)
    url = combined_stream_url(stream_base_url, streams)
    if merger_config is None:
        merger_config = MergerConfig(
            gap_hold_s=config.gap_hold_s,
            max_held_trades=config.max_held_trades,
            backfill_timeout_s=config.backfill_timeout_s,
        )
    merger = MergerLoop(
        Merger(
            bus.publish_nowait,
            merger_config,
            backfill=backfill is not None,
            streams=frozenset(streams),
        ),
        backfill,
        merger_config.backfill_timeout_s,
    )
    merger.core.on_published = merger.notify_published
    service = _Service(
        url=url,
        bus=bus,
        config=config,
        roles=tuple(
            RoleState(
                name=name,
                # One generator per role, drawn in role order: roles that fail in the same
                # instant draw in an order Trio may shuffle, and a shared one would then make a
                # seeded run irreproducible.
                backoff=Backoff(
                    config.backoff, None if rng is None else random.Random(rng.getrandbits(64))
                ),
                rate=RateMeter(config.rate_window_s),
            )
            for name in roles
        ),
        connector=connector,
        wall_clock_ms=wall_clock_ms,
        merger=merger,
        breaker=breaker,
        attempt_limiter=attempt_limiter,
        read_group=ReadGroup() if read_group_supported() else None,
        watch_depth=any(
            (route := route_for(name)) is not None and route.kind is StreamKind.DEPTH
            for name in streams
        ),
    )
    handle = MarketDataHandle(service, streams)
    if observe is not None:
        observe(handle)
    logger.info(
        "ws.market_data.start url=%s streams=%d roles=%s", url, len(streams), ",".join(roles)
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(service.merger.run)
            nursery.start_soon(service.watch_feed)
            if service.read_group is not None:
                nursery.start_soon(service.read_group.run)
            for role in service.roles:
                nursery.start_soon(service.run_role, role)
            await handle.wait_receiving()
            task_status.started(handle)
    except* StreamRejectedError as group:
        # The one way the feed ends on its own: re-raised bare, as the caller's error.
        raise first_leaf(group) from None
    raise AssertionError("market data tasks ended")  # pragma: no cover
